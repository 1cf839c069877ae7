//! The form of an API key, shared by the orchestrator that mints and
//! verifies keys and the gateway that refuses malformed ones without
//! asking it: `amk_<16 lowercase hex id>_<64 lowercase hex secret>`.

/// What every key starts with.
pub const PREFIX: &str = "amk_";
/// Hex digits of a key's id (8 random bytes).
pub const ID_HEX_LEN: usize = 16;
/// Hex digits of a key's secret (32 random bytes).
pub const SECRET_HEX_LEN: usize = 64;

/// Whether `s` is exactly `len` lowercase hex digits.
pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Splits a presented key into its id and secret; None when it is not of
/// the key's form.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix(PREFIX)?.split_once('_')?;
    (is_hex(id, ID_HEX_LEN) && is_hex(secret, SECRET_HEX_LEN)).then_some((id, secret))
}
