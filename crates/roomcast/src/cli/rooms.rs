//! `roomcast rooms`: a namespace's rooms with their member counts.

use clap::Args;
use roomcast_api::v1::ListRoomsRequest;
use serde_json::{json, Value};

use super::{status, Client, CommonFlags, Output};

#[derive(Args)]
pub struct Rooms {
    #[command(flatten)]
    pub common: CommonFlags,
    /// Namespace
    #[arg(long, short, default_value = "/")]
    namespace: String,
}

impl Rooms {
    pub async fn run(self, client: &mut Client) -> anyhow::Result<Output> {
        let res = client
            .list_rooms(ListRoomsRequest {
                namespace: self.namespace,
            })
            .await
            .map_err(status)?
            .into_inner();
        let text = res
            .rooms
            .iter()
            .map(|r| format!("{:>8}  {}", r.members, r.name))
            .collect();
        let rooms: Vec<Value> = res
            .rooms
            .iter()
            .map(|r| json!({ "name": r.name, "members": r.members }))
            .collect();
        Ok(Output::new(text, json!({ "rooms": rooms })))
    }
}
