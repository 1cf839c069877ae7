//! Helpers shared by the fuzz targets in `fuzz_targets/`: how one input
//! becomes several (a document and its arguments, a stream cut into
//! chunks), and an independent decoding of JWT payloads to check what a
//! verifier returned against what the token says.

/// Splits `data` at the first `0xff` byte (never valid UTF-8), so one input
/// carries two texts: `(before, after)`; `after` is empty without one.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Cuts `body` into chunks at the positions given by `cuts` (each byte a
/// chunk length, 0 meaning 1), so the same bytes arrive split in
/// fuzzer-chosen places, as network reads split them.
pub fn chunks(body: &[u8], cuts: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut lengths = cuts.iter().map(|c| usize::from(*c).max(1));
    while !rest.is_empty() {
        let n = lengths.next().unwrap_or(rest.len()).min(rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

/// The claims of a compact JWS, decoded without any check: what the token
/// says, to compare with what a verifier accepted.
pub fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine as _;
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Nesting depth of a JSON value (a scalar is 0, `[]` is 1).
pub fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
