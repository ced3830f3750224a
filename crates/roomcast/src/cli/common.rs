//! Where the API is and how to talk to it: the flags every command shares,
//! and the client they open.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use roomcast_api::v1::roomcast_client::RoomcastClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// The flags of every command: where the server is, how to authenticate,
/// how to print.
#[derive(Args, Clone)]
pub struct CommonFlags {
    /// gRPC address of a standalone process or control plane
    #[arg(
        long,
        env = "ROOMCAST_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// API key, sent as `authorization: Bearer KEY`
    #[arg(long, env = "ROOMCAST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PEM CA certificate that verifies an https:// server (otherwise the system roots)
    #[arg(long, env = "ROOMCAST_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Deadline of the call, ms
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// Adds the API key to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = RoomcastClient<InterceptedService<Channel, Bearer>>;

impl CommonFlags {
    /// Connects to the server. A call that `streams` has no deadline (it
    /// lasts until interrupted); connecting always has one.
    pub async fn connect(&self, streams: bool) -> anyhow::Result<Client> {
        let mut endpoint = Channel::from_shared(self.server.clone())
            .with_context(|| format!("invalid server address {:?}", self.server))?
            .connect_timeout(Duration::from_millis(self.timeout_ms));
        if !streams {
            endpoint = endpoint.timeout(Duration::from_millis(self.timeout_ms));
        }
        if let Some(path) = &self.ca_file {
            let ca = std::fs::read(path)
                .with_context(|| format!("cannot read ca file {}", path.display()))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .context("invalid tls settings")?;
        } else if self.server.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_enabled_roots())
                .context("invalid tls settings")?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        let bearer = match &self.api_key {
            Some(key) => Some(
                MetadataValue::try_from(format!("Bearer {key}"))
                    .context("the api key is not a valid header value")?,
            ),
            None => None,
        };
        Ok(RoomcastClient::with_interceptor(channel, Bearer(bearer)))
    }
}
