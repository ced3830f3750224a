//! `roomcast sockets`: the selected sockets, one per line.

use clap::Args;
use roomcast_api::v1::FetchSocketsRequest;
use serde_json::{json, Value};

use super::selector::SelectorFlags;
use super::{json_or_null, status, Client, CommonFlags, Output};

#[derive(Args)]
pub struct Sockets {
    #[command(flatten)]
    pub common: CommonFlags,
    #[command(flatten)]
    targets: SelectorFlags,
}

impl Sockets {
    pub async fn run(self, client: &mut Client) -> anyhow::Result<Output> {
        let res = client
            .fetch_sockets(FetchSocketsRequest {
                target: Some(self.targets.selector()),
            })
            .await
            .map_err(status)?
            .into_inner();
        let mut text = vec![format!(
            "{:<22} {:<16} {:<22} {:<10} rooms",
            "socket", "user", "node", "transport"
        )];
        text.extend(res.sockets.iter().map(|s| {
            let user = if s.user_id.is_empty() {
                "-"
            } else {
                s.user_id.as_str()
            };
            format!(
                "{:<22} {:<16} {:<22} {:<10} {}",
                s.id,
                user,
                s.node_id,
                s.transport,
                s.rooms.join(",")
            )
        }));
        let sockets: Vec<Value> = res
            .sockets
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "user_id": s.user_id, "namespace": s.namespace,
                    "node_id": s.node_id, "rooms": s.rooms,
                    "connected_at_ms": s.connected_at_ms, "remote_addr": s.remote_addr,
                    "transport": s.transport, "query": s.query, "headers": s.headers,
                    "data": json_or_null(&s.data_json),
                })
            })
            .collect();
        Ok(Output::new(text, json!({ "sockets": sockets })))
    }
}
