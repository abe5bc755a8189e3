//! TLS on the collector's own ports: rustls configurations from PEM files, and serving an
//! axum app over TLS (OTLP/HTTP, admin). OTLP/gRPC uses tonic's TLS with the same files.
//! Towards backends, [`ClientFiles`] gives the exporters' HTTP and gRPC clients a private
//! CA and a client certificate.
//!
//! Certificates are read at start; rotating them means restarting the collector (a rolling
//! restart in Kubernetes).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};
use vigil_core::tls::{certificates, private_key};

use vigil_core::tls::ClientFiles;

use crate::config::ServerTls;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish their requests at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The rustls server configuration of `tls`: its certificate and key, and client
/// certificates required when `client_ca_file` is set. Errors name the file at fault.
pub fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&tls.cert_file)?;
    let key = private_key(&tls.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca_file {
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca_file)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca_file.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("{}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "{} and {} do not make a usable certificate and key: {e}",
            tls.cert_file.display(),
            tls.key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// tonic's TLS configuration for the OTLP/gRPC port, from the same files.
pub fn grpc_config(tls: &ServerTls) -> Result<tonic::transport::ServerTlsConfig, String> {
    // Checked the same way as the other ports, so errors read alike.
    server_config(tls)?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let identity =
        tonic::transport::Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

/// Serves `app` over TLS on `listener` until `stop` turns true, then lets open
/// connections finish their requests (up to 30 s).
pub async fn serve_https(
    what: &'static str,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Builder::new(TokioExecutor::new());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(server = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(server = what, %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(server = what, %peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                debug!(server = what, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            server = what,
            "connections still open after 30 s were closed"
        );
    }
}

/// tonic's client TLS trusting `files`' CA and presenting its client certificate.
pub fn grpc_client_config(files: &ClientFiles) -> tonic::transport::ClientTlsConfig {
    let mut tls = tonic::transport::ClientTlsConfig::new();
    if let Some(ca) = &files.ca {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = &files.identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    tls
}
