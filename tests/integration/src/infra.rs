//! The real dependencies: NATS JetStream and PostgreSQL.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A nats-server with JetStream, killed (and its store removed) on drop.
pub struct Nats {
    child: Child,
    binary: PathBuf,
    pub url: String,
    pub port: u16,
    store: tempfile::TempDir,
}

impl Nats {
    /// Starts `$AGENTMESH_NATS_SERVER`, or the project's `.venv/bin/nats-server`
    /// (installed by `scripts/ensure-nats.sh`, which the test command runs).
    /// Sync on purpose: callable outside a runtime.
    pub fn start() -> anyhow::Result<Self> {
        let binary = std::env::var_os("AGENTMESH_NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv/bin/nats-server"));
        if !binary.exists() {
            bail!(
                "no nats-server at {}; run scripts/ensure-nats.sh or set AGENTMESH_NATS_SERVER",
                binary.display()
            );
        }
        let store = tempfile::tempdir()?;
        let port = free_port()?;
        let child = spawn_nats(&binary, port, store.path())?;
        Ok(Self {
            child,
            binary,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store,
        })
    }

    /// Kills the server (clients see the connection drop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = spawn_nats(&self.binary, self.port, self.store.path())?;
        Ok(())
    }
}

#[allow(clippy::disallowed_methods)] // sync on purpose: it waits for a port
fn spawn_nats(
    binary: &std::path::Path,
    port: u16,
    store: &std::path::Path,
) -> anyhow::Result<Child> {
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nats-server did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(child)
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a new, empty PostgreSQL database and returns its URL. The server
/// is `$AGENTMESH_TEST_DATABASE_URL` (default: the local one, trust auth).
pub async fn fresh_postgres() -> anyhow::Result<String> {
    use sea_orm::ConnectionTrait as _;
    let base = std::env::var("AGENTMESH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("agentmesh_test_{}", uuid::Uuid::new_v4().simple());
    let admin = sea_orm::Database::connect(&base)
        .await
        .with_context(|| format!("connect to {base}"))?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    admin.close().await?;
    let (prefix, _) = base
        .rsplit_once('/')
        .context("database URL has no database path")?;
    Ok(format!("{prefix}/{name}"))
}

/// The Redis the tests use: `$REDIS_URL` (the test command sets it), else
/// the local one.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}
