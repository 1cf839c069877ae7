//! Where the tests find all-MiniLM-L6-v2 (`scripts/ensure-minilm.sh` puts it
//! in `.cache/minilm/<version>`; `AGENTMESH_RETRIEVAL_MINILM_DIR` overrides),
//! and whether they may run without it: only when the files are absent AND
//! `AGENTMESH_REQUIRE_MINILM` is unset (`scripts/test` sets it).

use std::path::PathBuf;

/// The model folder, if its files are there.
pub fn minilm_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("AGENTMESH_RETRIEVAL_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/minilm/0.1.0")
        });
    dir.join("model.safetensors").is_file().then_some(dir)
}

/// True when a test needing the model should run; prints why when it
/// should not, and panics when the model is required but missing.
pub fn minilm_available(test: &str) -> bool {
    if minilm_dir().is_some() {
        return true;
    }
    if std::env::var("AGENTMESH_REQUIRE_MINILM").as_deref() == Ok("1") {
        panic!(
            "{test}: AGENTMESH_REQUIRE_MINILM=1 but all-MiniLM-L6-v2 is missing (run scripts/ensure-minilm.sh)"
        );
    }
    eprintln!(
        "SKIPPED {test}: all-MiniLM-L6-v2 not found (run scripts/ensure-minilm.sh or set AGENTMESH_RETRIEVAL_MINILM_DIR)"
    );
    false
}
