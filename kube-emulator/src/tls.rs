//! TLS in front of any emulator: a listener that terminates TLS (rustls,
//! aws-lc-rs) with a given certificate, optionally requires a client
//! certificate signed by a given CA (as kube-apiserver's
//! `--client-ca-file`, GitLab behind a proxy doing mutual TLS), and passes
//! the bytes to the emulator's plain address.
//!
//! Decision: a front, not TLS inside each emulator. The emulators' accept
//! loop stays as it is; the front gives any of them (Kubernetes, GitLab,
//! GitHub) an `https://` address, which is all a client can tell apart.
//! A refused handshake closes that connection only; the front stops when
//! dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long a client gets to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificates a [`TlsFront`] serves with, as PEM.
pub struct TlsIdentity {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// When set, a client certificate signed by this CA is required.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// A running TLS front; stopped when dropped.
pub struct TlsFront {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
}

fn server_config(identity: &TlsIdentity) -> io::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("server certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|e| invalid("server key", e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", e))?;
    let builder = match &identity.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots.add(cert.map_err(|e| invalid("client CA", e))?).map_err(|e| invalid("client CA", e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid("client CA", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| invalid("server certificate", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl TlsFront {
    /// Serves TLS on a free 127.0.0.1 port, passing connections to `backend`.
    pub fn start(backend: SocketAddr, identity: &TlsIdentity) -> io::Result<TlsFront> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(identity)?));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, mut stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("tls-front".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else { return };
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    while connections.try_join_next().is_some() {}
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let acceptor = acceptor.clone();
                            connections.spawn(async move {
                                let Ok(Ok(mut tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                                    return;
                                };
                                let Ok(mut plain) = TcpStream::connect(backend).await else { return };
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                            });
                        }
                    }
                }
            });
        })?;
        Ok(TlsFront { addr, stop: Some(stop), thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
