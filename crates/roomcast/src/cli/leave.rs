//! `roomcast leave`: the selected sockets leave rooms.

use clap::Args;
use roomcast_api::v1::RoomsRequest;
use serde_json::json;

use super::selector::SelectorFlags;
use super::{status, Client, CommonFlags, Output};

#[derive(Args)]
pub struct Leave {
    #[command(flatten)]
    pub common: CommonFlags,
    /// Rooms to leave
    #[arg(required = true, value_name = "ROOM")]
    leave: Vec<String>,
    #[command(flatten)]
    targets: SelectorFlags,
}

impl Leave {
    pub async fn run(self, client: &mut Client) -> anyhow::Result<Output> {
        client
            .leave_rooms(RoomsRequest {
                target: Some(self.targets.selector()),
                rooms: self.leave,
            })
            .await
            .map_err(status)?;
        Ok(Output::line("left", json!({ "left": true })))
    }
}
