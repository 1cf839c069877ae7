//! Optional mutual TLS on every internal gRPC hop: one certificate per
//! process, presented both as a server (its gRPC port) and as a client (its
//! calls to other services), and one CA that both sides verify the other
//! against. Off unless configured, so a laptop run stays plain.
//!
//! Configuration (every service, the same names; all three files or none):
//! - `AGENTMESH_TLS_CERT_FILE`: PEM certificate chain of this process. It
//!   serves as server and client certificate, so it needs both the
//!   `serverAuth` and `clientAuth` extended key usages (or none), and a
//!   subject alternative name that callers dial (the Service's DNS name).
//! - `AGENTMESH_TLS_KEY_FILE`: its PEM private key (PKCS#8, PKCS#1 or SEC1).
//! - `AGENTMESH_TLS_CA_FILE`: PEM bundle of the CAs that sign the mesh's
//!   certificates; several are fine (a CA rotation lists old and new).
//! - `AGENTMESH_TLS_SERVER_NAME` (optional): the name every client checks
//!   the server certificate for, instead of the host of the URL it dials
//!   (one mesh-wide certificate, or dialing by IP without an IP SAN).
//! - `AGENTMESH_TLS_RELOAD_INTERVAL_MS` (default 10000): how often, at
//!   most, the files are re-read (see below); 0 re-reads on every handshake.
//! - `AGENTMESH_TLS_HANDSHAKE_TIMEOUT_MS` (default 5000): a server drops a
//!   connection whose handshake takes longer.
//!
//! Rotation without restart: before a handshake (accepting or dialing) the
//! files are re-read when the reload interval has passed since the last
//! look, and new configurations are built when their bytes changed, so a
//! renewed Secret (cert-manager, a mounted Kubernetes Secret) is used from
//! the next connection on. A set of files that does not load (a key that
//! does not match its certificate while a renewal is half-written) keeps
//! the previous configuration and logs a warning, and is tried again at the
//! next look. Connections already open keep the certificates they were
//! made with (TLS checks them once, at the handshake): HTTP/2 channels live
//! long, so rotate before expiry, as cert-manager does by default.
//!
//! What it must never do: fall back to plain text when TLS is configured,
//! or accept a client certificate from another CA. Service tokens stay
//! required on top ([`crate::service_auth`]): the certificate proves the
//! peer holds a mesh identity, the token is checked per call.
//!
//! rustls on the `ring` provider only (the one the tree already has through
//! async-nats); no aws-lc-rs, no OpenSSL.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::env::{self, ConfigError, Env};

pub const CERT_FILE_VAR: &str = "AGENTMESH_TLS_CERT_FILE";
pub const KEY_FILE_VAR: &str = "AGENTMESH_TLS_KEY_FILE";
pub const CA_FILE_VAR: &str = "AGENTMESH_TLS_CA_FILE";
pub const SERVER_NAME_VAR: &str = "AGENTMESH_TLS_SERVER_NAME";
pub const RELOAD_INTERVAL_VAR: &str = "AGENTMESH_TLS_RELOAD_INTERVAL_MS";
pub const HANDSHAKE_TIMEOUT_VAR: &str = "AGENTMESH_TLS_HANDSHAKE_TIMEOUT_MS";

const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The server of an HTTP/2-only protocol offers only `h2`.
const ALPN_H2: &[u8] = b"h2";

/// The mesh's TLS identity and trust, reloaded from its files as they
/// change. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MeshTls(Arc<Inner>);

struct Inner {
    paths: [String; 3],
    server_name: Option<ServerName<'static>>,
    reload_interval: Duration,
    handshake_timeout: Duration,
    state: Mutex<State>,
}

struct State {
    /// The files' bytes the configurations below were built from.
    pem: [Vec<u8>; 3],
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    checked: Instant,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Paths only: never key material.
        f.debug_struct("MeshTls")
            .field("cert_file", &self.0.paths[0])
            .field("ca_file", &self.0.paths[2])
            .field("server_name", &self.0.server_name)
            .finish_non_exhaustive()
    }
}

/// Which variable each of [`Inner::paths`] came from.
const FILE_VARS: [&str; 3] = [CERT_FILE_VAR, KEY_FILE_VAR, CA_FILE_VAR];

impl MeshTls {
    /// Reads the variables of the module docs and loads the files; `None`
    /// when none of the three files is set. An error names the variable.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let set: Vec<Option<String>> = FILE_VARS.iter().map(|v| env::optional(env, v)).collect();
        if set.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut paths: [String; 3] = Default::default();
        for ((slot, value), var) in paths.iter_mut().zip(set).zip(FILE_VARS) {
            *slot = value.ok_or_else(|| ConfigError::Invalid {
                var: var.to_owned(),
                reason: format!(
                    "required with mutual TLS (set all of {CERT_FILE_VAR}, {KEY_FILE_VAR} and \
                     {CA_FILE_VAR}, or none)"
                ),
            })?;
        }
        let server_name = env::optional(env, SERVER_NAME_VAR)
            .map(|name| {
                ServerName::try_from(name.clone()).map_err(|e| ConfigError::Invalid {
                    var: SERVER_NAME_VAR.to_owned(),
                    reason: format!("{name:?}: {e}"),
                })
            })
            .transpose()?;
        let reload_interval = env::millis_or(env, RELOAD_INTERVAL_VAR, DEFAULT_RELOAD_INTERVAL)?;
        let handshake_timeout =
            env::millis_or(env, HANDSHAKE_TIMEOUT_VAR, DEFAULT_HANDSHAKE_TIMEOUT)?;
        if handshake_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                var: HANDSHAKE_TIMEOUT_VAR.to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        let pem = read_files(&paths)?;
        let (server, client) = build(&paths, &pem)?;
        Ok(Some(Self(Arc::new(Inner {
            paths,
            server_name,
            reload_interval,
            handshake_timeout,
            state: Mutex::new(State {
                pem,
                server,
                client,
                checked: Instant::now(),
            }),
        }))))
    }

    /// The configurations to handshake with now, reloaded first when the
    /// interval has passed and the files changed.
    fn current(&self) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let mut state = match self.0.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() >= self.0.reload_interval {
            state.checked = Instant::now();
            // Blocking reads under a lock on an async path: three small
            // files, at most once per interval, and only when a connection
            // is being made; rustls' own hooks are synchronous anyway.
            match read_files(&self.0.paths) {
                Ok(pem) if pem != state.pem => match build(&self.0.paths, &pem) {
                    Ok((server, client)) => {
                        tracing::info!(cert_file = %self.0.paths[0], "mesh tls certificates reloaded");
                        *state = State {
                            pem,
                            server,
                            client,
                            checked: state.checked,
                        };
                    }
                    Err(error) => tracing::warn!(
                        %error,
                        "mesh tls files changed but do not load: keeping the previous ones"
                    ),
                },
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    %error,
                    "mesh tls files unreadable: keeping the previous ones"
                ),
            }
        }
        (state.server.clone(), state.client.clone())
    }

    /// A channel to `endpoint` over mutual TLS, connected on first use. The
    /// endpoint's `http` or `https` scheme makes no difference: this
    /// channel always speaks TLS, and never plain text.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        let endpoint = match plain_scheme(endpoint.uri()) {
            // tonic refuses an `https` URI unless it does TLS itself; here
            // the connector below does.
            Some(uri) => endpoint_with_uri(endpoint, uri),
            None => endpoint,
        };
        endpoint.connect_with_connector_lazy(Connector { tls: self.clone() })
    }

    /// The connections of `incoming` once their TLS handshake succeeded:
    /// a client certificate signed by the mesh CA is required. Failed or
    /// slow handshakes are logged and dropped, never passed on (tonic stops
    /// serving on an error it does not know as transient); so are the
    /// errors of `incoming`, as tonic does. Ends when `incoming` ends.
    pub fn accept<S, IO, E>(
        &self,
        incoming: S,
    ) -> impl Stream<Item = Result<TlsIo<IO>, Infallible>> + Send + 'static
    where
        S: Stream<Item = Result<IO, E>> + Send + 'static,
        E: std::fmt::Display,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IO::ConnectInfo: std::fmt::Debug,
    {
        struct Accepting<S, IO> {
            incoming: Pin<Box<S>>,
            /// Each handshake on its own task, so that a slow peer never
            /// holds up the next connection.
            handshakes: tokio::task::JoinSet<Option<TlsIo<IO>>>,
            tls: MeshTls,
            done: bool,
        }
        let state = Accepting {
            incoming: Box::pin(incoming),
            handshakes: tokio::task::JoinSet::new(),
            tls: self.clone(),
            done: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            use futures::StreamExt as _;
            loop {
                if state.done && state.handshakes.is_empty() {
                    return None;
                }
                tokio::select! {
                    next = state.incoming.next(), if !state.done => match next {
                        Some(Ok(io)) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.current().0);
                            let timeout = state.tls.0.handshake_timeout;
                            let peer = io.connect_info();
                            state.handshakes.spawn(async move {
                                match tokio::time::timeout(timeout, acceptor.accept(io)).await {
                                    Ok(Ok(stream)) => Some(stream),
                                    Ok(Err(error)) => {
                                        tracing::warn!(?peer, %error, "mesh tls handshake refused");
                                        None
                                    }
                                    Err(_) => {
                                        tracing::warn!(?peer, ?timeout, "mesh tls handshake timed out");
                                        None
                                    }
                                }
                            });
                        }
                        Some(Err(error)) => tracing::debug!(%error, "accept failed"),
                        None => state.done = true,
                    },
                    Some(done) = state.handshakes.join_next(), if !state.handshakes.is_empty() => {
                        if let Ok(Some(stream)) = done {
                            return Some((Ok(stream), state));
                        }
                    }
                }
            }
        })
    }
}

/// A server-side mesh TLS connection over `IO` (tonic reads the peer's
/// certificates from it: `Request::peer_certs`).
pub type TlsIo<IO> = tokio_rustls::server::TlsStream<IO>;

/// A lazy channel to `endpoint`: over mutual TLS when `tls` is set, plain
/// otherwise. What every internal gRPC client connects with.
pub fn connect_lazy(endpoint: Endpoint, tls: Option<&MeshTls>) -> Channel {
    match tls {
        Some(tls) => tls.connect_lazy(endpoint),
        None => endpoint.connect_lazy(),
    }
}

/// The channel the OTLP span exporter sends over when mesh TLS is on: the
/// trace-collector's OTLP/gRPC receiver is one of its internal gRPC
/// services, so it wants the mesh certificate too (an endpoint outside the
/// mesh must then accept it). `None`, for the exporter's own plain channel,
/// without TLS or without `OTEL_EXPORTER_OTLP_ENDPOINT`. Call within a
/// Tokio runtime.
pub fn otlp_channel(shared: &crate::SharedConfig) -> Result<Option<Channel>, ConfigError> {
    let (Some(tls), Some(url)) = (&shared.tls, &shared.otlp_endpoint) else {
        return Ok(None);
    };
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| ConfigError::Invalid {
        var: "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        reason: format!("{url:?}: {e}"),
    })?;
    Ok(Some(tls.connect_lazy(
        endpoint.connect_timeout(Duration::from_secs(5)),
    )))
}

/// `uri` with an `http` scheme (and the `https` default port made
/// explicit), when it has an `https` one.
fn plain_scheme(uri: &Uri) -> Option<Uri> {
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let authority = uri.authority()?;
    let authority = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:443", authority.as_str()),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .ok()
}

/// `endpoint`'s settings on another URI (tonic has no setter for it).
fn endpoint_with_uri(endpoint: Endpoint, uri: Uri) -> Endpoint {
    let mut fresh = Endpoint::from(uri);
    if let Some(timeout) = endpoint.get_connect_timeout() {
        fresh = fresh.connect_timeout(timeout);
    }
    fresh.tcp_nodelay(endpoint.get_tcp_nodelay())
}

// === client connector ===

/// Dials TCP, then the TLS handshake: our certificate presented, the
/// server's verified against the mesh CA for the URL's host (or the
/// configured server name).
#[derive(Clone)]
struct Connector {
    tls: MeshTls,
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<ClientIo>>> + Send + 'static>>;
type ClientIo = tokio_rustls::client::TlsStream<TcpStream>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<ClientIo>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid =
                |reason: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, reason);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let name = match &tls.0.server_name {
                Some(name) => name.clone(),
                None => ServerName::try_from(host.clone())
                    .map_err(|e| invalid(format!("{host:?} is not a tls server name: {e}")))?,
            };
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(tls.current().1);
            let stream = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

// === loading ===

fn read_files(paths: &[String; 3]) -> Result<[Vec<u8>; 3], ConfigError> {
    let mut pem: [Vec<u8>; 3] = Default::default();
    for ((slot, path), var) in pem.iter_mut().zip(paths).zip(FILE_VARS) {
        *slot = std::fs::read(path).map_err(|e| ConfigError::Invalid {
            var: var.to_owned(),
            reason: format!("read {path:?}: {e}"),
        })?;
    }
    Ok(pem)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server and client configurations of one set of files.
fn build(
    paths: &[String; 3],
    pem: &[Vec<u8>; 3],
) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), ConfigError> {
    let invalid = |index: usize, reason: String| ConfigError::Invalid {
        var: FILE_VARS[index].to_owned(),
        reason: format!("{:?}: {reason}", paths[index]),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem[0])
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(0, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(0, "holds no certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem[1])
        .map_err(|e| invalid(1, format!("no PEM private key: {e}")))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&pem[2]) {
        let ca = ca.map_err(|e| invalid(2, format!("not a PEM certificate bundle: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| invalid(2, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid(2, "holds no certificate".to_owned()));
    }
    let roots = Arc::new(roots);
    let provider = provider();

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| invalid(2, e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(0, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| invalid(1, format!("does not fit the certificate: {e}")))?;
    server.alpn_protocols = vec![ALPN_H2.to_vec()];

    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(0, e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| invalid(1, format!("does not fit the certificate: {e}")))?;
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok((Arc::new(server), Arc::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn off_unless_configured_and_all_three_files_or_none() {
        assert!(MeshTls::from_env(&Env::new()).unwrap().is_none());
        // Partial settings name the first missing variable.
        let err = MeshTls::from_env(&env(&[(CERT_FILE_VAR, "/c.pem")])).unwrap_err();
        assert!(err.to_string().starts_with(KEY_FILE_VAR), "{err}");
        let err = MeshTls::from_env(&env(&[(CERT_FILE_VAR, "/c.pem"), (KEY_FILE_VAR, "/k.pem")]))
            .unwrap_err();
        assert!(err.to_string().starts_with(CA_FILE_VAR), "{err}");
        let err = MeshTls::from_env(&env(&[(CA_FILE_VAR, "/ca.pem")])).unwrap_err();
        assert!(err.to_string().starts_with(CERT_FILE_VAR), "{err}");
    }

    #[test]
    fn unreadable_or_malformed_files_name_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all").unwrap();
        let junk = junk.to_str().unwrap();
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().unwrap();

        let err = MeshTls::from_env(&env(&[
            (CERT_FILE_VAR, missing),
            (KEY_FILE_VAR, junk),
            (CA_FILE_VAR, junk),
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with(CERT_FILE_VAR), "{err}");
        // A file without a PEM certificate.
        let err = MeshTls::from_env(&env(&[
            (CERT_FILE_VAR, junk),
            (KEY_FILE_VAR, junk),
            (CA_FILE_VAR, junk),
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with(CERT_FILE_VAR), "{err}");

        for (pairs, var) in [
            (vec![(SERVER_NAME_VAR, "not a name!")], SERVER_NAME_VAR),
            (vec![(RELOAD_INTERVAL_VAR, "often")], RELOAD_INTERVAL_VAR),
            (vec![(HANDSHAKE_TIMEOUT_VAR, "0")], HANDSHAKE_TIMEOUT_VAR),
        ] {
            let mut all = vec![
                (CERT_FILE_VAR, junk),
                (KEY_FILE_VAR, junk),
                (CA_FILE_VAR, junk),
            ];
            all.extend(pairs);
            let err = MeshTls::from_env(&env(&all)).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn https_uris_become_plain_for_the_tls_connector() {
        let uri = plain_scheme(&Uri::from_static("https://orchestrator.ai-agents.svc")).unwrap();
        assert_eq!(uri.to_string(), "http://orchestrator.ai-agents.svc:443/");
        let uri = plain_scheme(&Uri::from_static("https://10.0.0.1:7001")).unwrap();
        assert_eq!(uri.to_string(), "http://10.0.0.1:7001/");
        assert!(plain_scheme(&Uri::from_static("http://127.0.0.1:7001")).is_none());
    }
}
