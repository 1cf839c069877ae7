#![no_main]
//! JWKS documents as the gateway loads them (a file, or polled from the
//! identity provider: rotation swaps the key set in place), then a raw
//! token against the loaded set. Input: the JWKS JSON, `0xff`, a token.
//!
//! Properties: a document that yields no usable key is an error and the
//! previous key set keeps verifying; a loaded set counts at most the keys
//! the document lists; a token that verifies has the claims the verifier
//! returned.

use std::sync::LazyLock;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use mesh_auth::{TokenRules, Verifier};
use p256::pkcs8::EncodePrivateKey as _;

/// A JWKS with one ES256 key (`kid` "k1") and a token it verifies: a fixed
/// test scalar, not a secret.
static GOOD: LazyLock<(String, String)> = LazyLock::new(|| {
    let signing = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).expect("a scalar");
    let der = signing.to_pkcs8_der().expect("pkcs8");
    let key = EncodingKey::from_ec_der(der.as_bytes());
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).expect("a jwk");
    jwk.common.key_id = Some("k1".to_owned());
    let jwks = serde_json::json!({"keys": [jwk]}).to_string();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".to_owned());
    let claims = serde_json::json!({"tenant": "acme", "exp": mesh_fuzz::now() + 3600});
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("a token");
    (jwks, token)
});

fuzz_target!(|data: &[u8]| {
    let (jwks, good_token) = &*GOOD;
    let (document, raw) = mesh_fuzz::split2(data);
    let Ok(document) = std::str::from_utf8(document) else {
        return;
    };
    let verifier = Verifier::new(None, TokenRules::default());
    assert_eq!(verifier.set_jwks(jwks), Ok(1));
    match verifier.set_jwks(document) {
        Err(_) => {
            let kept = verifier.verify(good_token);
            assert!(
                kept.is_ok(),
                "a refused document dropped the old key set: {kept:?}"
            );
        }
        Ok(count) => {
            let listed = serde_json::from_str::<serde_json::Value>(document)
                .ok()
                .and_then(|v| v["keys"].as_array().map(Vec::len))
                .unwrap_or(0);
            assert!(
                count >= 1 && count <= listed,
                "{count} keys loaded from a document listing {listed}"
            );
        }
    }
    if let Ok(raw) = std::str::from_utf8(raw) {
        if let Ok(principal) = verifier.verify(raw) {
            let claims = mesh_fuzz::jwt_claims(raw).expect("a verified token has claims");
            assert_eq!(
                claims.get("tenant").and_then(|t| t.as_str()),
                Some(principal.tenant.as_str())
            );
        }
    }
});
