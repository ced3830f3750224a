//! `roomcast disconnect`: the selected sockets leave their namespace, or
//! (`--close`) lose their whole connection.

use clap::Args;
use roomcast_api::v1::DisconnectSocketsRequest;
use serde_json::json;

use super::selector::SelectorFlags;
use super::{status, Client, CommonFlags, Output};

#[derive(Args)]
pub struct Disconnect {
    #[command(flatten)]
    pub common: CommonFlags,
    #[command(flatten)]
    targets: SelectorFlags,
    /// Close the whole connection, not only the namespace
    #[arg(long)]
    close: bool,
}

impl Disconnect {
    pub async fn run(self, client: &mut Client) -> anyhow::Result<Output> {
        let res = client
            .disconnect_sockets(DisconnectSocketsRequest {
                target: Some(self.targets.selector()),
                close: self.close,
            })
            .await
            .map_err(status)?
            .into_inner();
        Ok(Output::line(
            format!("disconnected {}", res.disconnected),
            json!({ "disconnected": res.disconnected }),
        ))
    }
}
