//! Milvus Lite (the PyPI package `milvus-lite`, which serves Milvus' real
//! gRPC API on a TCP port) for the retrieval service's Milvus backend:
//! started per test on a free port with its own data folder, killed on drop.
//! `scripts/test` installs it into `.venv` and sets `AGENTMESH_REQUIRE_MILVUS`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::infra::free_port;

pub struct MilvusLite {
    child: Child,
    pub url: String,
    _data: tempfile::TempDir,
}

/// `$AGENTMESH_MILVUS_LITE`, or the project's `.venv/bin/milvus-lite`.
pub fn binary() -> Option<PathBuf> {
    std::env::var_os("AGENTMESH_MILVUS_LITE")
        .map(PathBuf::from)
        .or_else(|| {
            Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/milvus-lite"))
        })
        .filter(|p| p.is_file())
}

/// True when a Milvus test should run; says why when not, and panics when
/// `AGENTMESH_REQUIRE_MILVUS=1` but milvus-lite is missing.
pub fn milvus_available(test: &str) -> bool {
    if binary().is_some() {
        return true;
    }
    if std::env::var("AGENTMESH_REQUIRE_MILVUS").as_deref() == Ok("1") {
        panic!("{test}: AGENTMESH_REQUIRE_MILVUS=1 but milvus-lite is not installed");
    }
    eprintln!("SKIPPED {test}: milvus-lite not found (pip install milvus-lite into .venv)");
    false
}

impl MilvusLite {
    pub async fn start() -> anyhow::Result<Self> {
        let Some(binary) = binary() else {
            bail!("milvus-lite not found (AGENTMESH_MILVUS_LITE or .venv/bin/milvus-lite)");
        };
        let data = tempfile::tempdir()?;
        let port = free_port()?;
        let child = Command::new(&binary)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let mut this = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _data: data,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = this.child.try_wait()? {
                bail!("milvus-lite exited with {status} before listening");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("milvus-lite did not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(this)
    }
}

impl Drop for MilvusLite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
