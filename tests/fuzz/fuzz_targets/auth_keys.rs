#![no_main]
//! The other credentials the mesh parses: API keys
//! (`amk_<16 hex id>_<64 hex secret>`), service tokens (HS256 with the
//! mesh key, `agentmesh-service-token`), and the trace-collector's Langfuse
//! Basic auth (`public_key:secret_key`). Input: a presented credential,
//! `0xff`, a service name.
//!
//! Properties: a parsed API key is exactly its parts put back together; a
//! service token verifies only for the internal audience and issuer and
//! names the service it was signed for; Basic auth parses back the pair it
//! was built from.

use std::sync::LazyLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use mesh_auth::api_key;
use mesh_auth::service::{
    SERVICE_AUDIENCE, SERVICE_ISSUER, ServiceAuthConfig, ServiceKey, ServiceVerifier,
    issue_service_token,
};
use trace_collector::keys::parse_basic;

static KEY: LazyLock<ServiceKey> =
    LazyLock::new(|| ServiceKey::new("fuzz-target-service-key-0123456789").expect("a key"));
static VERIFIER: LazyLock<ServiceVerifier> =
    LazyLock::new(|| ServiceAuthConfig::new(KEY.clone()).verifier());

fuzz_target!(|data: &[u8]| {
    let (presented, service) = mesh_fuzz::split2(data);
    if let Ok(text) = std::str::from_utf8(presented) {
        if let Some((id, secret)) = api_key::parse(text) {
            assert_eq!(format!("{}{id}_{secret}", api_key::PREFIX), text);
            assert!(api_key::is_hex(id, api_key::ID_HEX_LEN));
            assert!(api_key::is_hex(secret, api_key::SECRET_HEX_LEN));
        }
        if let Ok(sub) = VERIFIER.verify_header(Some(text)) {
            let claims = mesh_fuzz::jwt_claims(text).expect("a verified token has claims");
            assert_eq!(claims["sub"].as_str(), Some(sub.as_str()));
            assert_eq!(claims["aud"].as_str(), Some(SERVICE_AUDIENCE));
            assert_eq!(claims["iss"].as_str(), Some(SERVICE_ISSUER));
        }
        if let Some((public, secret)) = parse_basic(text) {
            assert!(!public.contains(':'), "{text:?}");
            let again = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{public}:{secret}"))
            );
            assert_eq!(parse_basic(&again), Some((public, secret)));
        }
    }
    let Ok(service) = std::str::from_utf8(service) else {
        return;
    };
    let token = issue_service_token(&KEY, service, SERVICE_AUDIENCE, 60).expect("signs");
    match VERIFIER.verify(&token) {
        Ok(sub) => assert_eq!(sub, service),
        Err(e) => assert!(service.is_empty(), "a token for {service:?} refused: {e}"),
    }
    if service != SERVICE_AUDIENCE {
        let other = issue_service_token(&KEY, "gateway", service, 60).expect("signs");
        assert!(
            VERIFIER.verify(&other).is_err(),
            "a token for audience {service:?} verified"
        );
    }
    if let (Some(public), Some(secret)) = (service.split(':').next(), Some(service)) {
        let header = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{public}:{secret}"))
        );
        assert_eq!(
            parse_basic(&header),
            Some((public.to_owned(), secret.to_owned()))
        );
    }
});
