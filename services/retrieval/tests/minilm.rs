//! all-MiniLM-L6-v2 in-process against published reference numbers: the
//! cosine similarities that the sentence-transformers README prints for this
//! model on three sentences (0.6660, 0.1046, 0.1411), and the properties the
//! service relies on (384 values, unit length, batch = one by one).
//!
//! Needs the model files (`scripts/ensure-minilm.sh`, which `scripts/test`
//! runs). Without them the test says so and passes, unless
//! `AGENTMESH_REQUIRE_MINILM=1` (set by `scripts/test`), where it fails.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use retrieval::embed::MiniLm;

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("AGENTMESH_RETRIEVAL_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/minilm/0.1.0")
        });
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("AGENTMESH_REQUIRE_MINILM").as_deref() != Ok("1"),
        "AGENTMESH_REQUIRE_MINILM=1 but no model in {} (run scripts/ensure-minilm.sh)",
        dir.display()
    );
    eprintln!(
        "SKIPPED: all-MiniLM-L6-v2 files not found in {} (run scripts/ensure-minilm.sh)",
        dir.display()
    );
    None
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn matches_the_published_similarities() {
    let Some(dir) = model_dir() else { return };
    let model = MiniLm::load(&dir, 8).unwrap();
    let sentences: Vec<String> = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ]
    .map(str::to_owned)
    .to_vec();
    let v = model.embed_blocking(&sentences).unwrap();
    assert_eq!(v.len(), 3);
    for e in &v {
        assert_eq!(e.len(), 384);
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    let (s01, s02, s12) = (cos(&v[0], &v[1]), cos(&v[0], &v[2]), cos(&v[1], &v[2]));
    eprintln!("similarities: {s01:.4} {s02:.4} {s12:.4}");
    assert!((s01 - 0.6660).abs() < 2e-3, "{s01}");
    assert!((s02 - 0.1046).abs() < 2e-3, "{s02}");
    assert!((s12 - 0.1411).abs() < 2e-3, "{s12}");
    // Padding in a batch must not change a sentence's vector.
    let alone = model.embed_blocking(&sentences[2..3]).unwrap();
    assert!(cos(&alone[0], &v[2]) > 0.99999);
}
