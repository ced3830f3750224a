//! The gRPC port with TLS, and with mutual TLS, against a real process: the
//! CLI and a tonic client connect with the right certificates and are refused
//! without them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use roomcast_api::v1::roomcast_client::RoomcastClient;
use roomcast_api::v1::ListRoomsRequest;
use roomcast_testkit::{binary, Process};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn bin() -> PathBuf {
    binary(Path::new(env!("CARGO_BIN_EXE_roomcast")))
}

/// A CA, a server certificate for `localhost` and a client certificate, all
/// written as PEM files into `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: String,
    client_key: String,
}

fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let leaf = |name: &str| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf("localhost");
    let (client_cert, client_key) = leaf("backend");
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write pem");
        path
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert,
        client_key,
    }
}

async fn list_rooms(channel: Channel) -> Result<(), tonic::Status> {
    RoomcastClient::new(channel)
        .list_rooms(ListRoomsRequest::default())
        .await
        .map(drop)
}

fn https(p: &Process) -> String {
    format!("https://localhost:{}", p.grpc.port())
}

#[tokio::test]
async fn grpc_port_speaks_tls_and_checks_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());
    let s = |p: &Path| p.to_str().expect("utf8 path").to_owned();

    // Server TLS: the CLI trusts the CA; plaintext callers fail.
    let p = Process::standalone(
        &bin(),
        &[
            "--allow-anonymous",
            "--grpc-tls-cert-file",
            &s(&pki.server_cert),
            "--grpc-tls-key-file",
            &s(&pki.server_key),
        ],
    )
    .await
    .expect("start with tls");
    let out = std::process::Command::new(bin())
        .args([
            "rooms",
            "--json",
            "--server",
            &https(&p),
            "--ca-file",
            &s(&pki.ca),
        ])
        .output()
        .expect("cli runs");
    assert!(
        out.status.success(),
        "cli over tls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = Channel::from_shared(format!("http://{}", p.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("tcp connects");
    assert!(list_rooms(plain).await.is_err(), "plaintext is refused");

    // Mutual TLS: a caller without a client certificate is refused, one with a
    // certificate signed by the configured CA gets through.
    let p = Process::standalone(
        &bin(),
        &[
            "--allow-anonymous",
            "--grpc-tls-cert-file",
            &s(&pki.server_cert),
            "--grpc-tls-key-file",
            &s(&pki.server_key),
            "--grpc-tls-client-ca-file",
            &s(&pki.ca),
        ],
    )
    .await
    .expect("start with mtls");
    let ca = std::fs::read(&pki.ca).expect("ca");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .domain_name("localhost");
    let anonymous = Channel::from_shared(https(&p))
        .expect("uri")
        .tls_config(tls.clone())
        .expect("tls config")
        .connect()
        .await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(channel) => list_rooms(channel).await.is_err(),
    };
    assert!(refused, "no client certificate, no call");
    let with_cert = Channel::from_shared(https(&p))
        .expect("uri")
        .tls_config(tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key)))
        .expect("tls config")
        .connect()
        .await
        .expect("mtls connects");
    list_rooms(with_cert)
        .await
        .expect("a signed client certificate is accepted");
}

#[test]
fn half_a_tls_configuration_is_refused() {
    let out = std::process::Command::new(bin())
        .args([
            "standalone",
            "--allow-anonymous",
            "--grpc-tls-cert-file",
            "/nonexistent.pem",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("go together"), "{err}");
}
