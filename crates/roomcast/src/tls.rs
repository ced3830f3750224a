//! TLS on the client port (`https://` polling and `wss://` WebSocket), for
//! deployments without a TLS-terminating proxy in front.
//!
//! The certificate and key are read and checked when the settings are resolved,
//! before any port is bound. Handshakes run in the connections' own tasks, off
//! the accept loop, each bounded by the client port's handshake deadline and
//! counted toward its cap on pending handshakes (see `roomcast_edge::port`), so
//! a slow or silent client holds up nobody. A client that speaks plain HTTP to
//! the port gets a `400` that says so, then the connection is closed.

use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Most bytes of a plain-HTTP request read before answering it with a 400.
const PLAIN_REQUEST_MAX: usize = 16 * 1024;
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The client port's TLS settings, checked. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls(Arc<rustls::ServerConfig>);

impl ClientTls {
    /// A server configuration from a PEM certificate chain (leaf first) and a
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) that must match the leaf.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<ClientTls> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .context("cannot parse the pem certificates")?;
        if certs.is_empty() {
            bail!("no certificate in the certificate file");
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).context("cannot parse the pem key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("no tls protocol version available")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the key does not fit the certificate")?;
        // The client port serves HTTP/1.1 only (the WebSocket upgrade needs it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls(Arc::new(config)))
    }
}

/// The TLS handshake of each client connection, for the client port's server
/// ([`roomcast_edge::port`]), which bounds it by the handshake deadline and
/// counts it toward the cap on pending handshakes.
pub struct TlsHandshake(TlsAcceptor);

impl TlsHandshake {
    pub fn new(tls: &ClientTls) -> TlsHandshake {
        TlsHandshake(TlsAcceptor::from(tls.0.clone()))
    }
}

impl roomcast_edge::port::Handshake for TlsHandshake {
    type Io = TlsStream<TcpStream>;

    fn handshake(
        &self,
        tcp: TcpStream,
    ) -> impl std::future::Future<Output = std::io::Result<Option<Self::Io>>> + Send {
        handshake(&self.0, tcp)
    }
}

/// The TLS handshake; `None` when the client spoke plain HTTP (answered 400).
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        refuse_plain_http(tcp).await?;
        return Ok(None);
    }
    acceptor.accept(tcp).await.map(Some)
}

/// Reads the request head (so that closing does not reset the connection
/// under the response), answers 400 and closes.
async fn refuse_plain_http(mut tcp: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while head.len() < PLAIN_REQUEST_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = "this port speaks https: use https:// or wss://\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(response.as_bytes()).await?;
    tcp.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_matching_pem_pair() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        assert!(ClientTls::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).is_ok());
        assert!(ClientTls::from_pem(b"", key_pem.as_bytes()).is_err());
        assert!(ClientTls::from_pem(cert_pem.as_bytes(), b"not a key").is_err());
        let other = rcgen::KeyPair::generate().expect("key");
        let err = ClientTls::from_pem(cert_pem.as_bytes(), other.serialize_pem().as_bytes())
            .err()
            .expect("mismatch refused");
        assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
    }
}
