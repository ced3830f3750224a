//! `roomcast join`: the selected sockets join rooms.

use clap::Args;
use roomcast_api::v1::RoomsRequest;
use serde_json::json;

use super::selector::SelectorFlags;
use super::{status, Client, CommonFlags, Output};

#[derive(Args)]
pub struct Join {
    #[command(flatten)]
    pub common: CommonFlags,
    /// Rooms to join
    #[arg(required = true, value_name = "ROOM")]
    join: Vec<String>,
    #[command(flatten)]
    targets: SelectorFlags,
}

impl Join {
    pub async fn run(self, client: &mut Client) -> anyhow::Result<Output> {
        client
            .join_rooms(RoomsRequest {
                target: Some(self.targets.selector()),
                rooms: self.join,
            })
            .await
            .map_err(status)?;
        Ok(Output::line("joined", json!({ "joined": true })))
    }
}
