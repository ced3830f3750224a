//! `roomcast inbox`: the at-least-once messages waiting for a user or
//! socket, or (`--purge`) dropping them.

use clap::Args;
use roomcast_api::v1::{GetInboxRequest, PurgeInboxRequest};
use serde_json::{json, Value};

use super::selector::target_name;
use super::{json_or_null, status, Client, CommonFlags, Output};

#[derive(Args)]
pub struct Inbox {
    #[command(flatten)]
    pub common: CommonFlags,
    /// The user
    #[arg(long, short, required_unless_present = "socket", allow_hyphen_values = true, value_parser = target_name)]
    user: Option<String>,
    /// Or the socket
    #[arg(long, short, conflicts_with = "user", allow_hyphen_values = true, value_parser = target_name)]
    socket: Option<String>,
    /// Namespace
    #[arg(long, short, default_value = "/")]
    namespace: String,
    /// Drop the waiting messages instead of listing them
    #[arg(long)]
    purge: bool,
}

impl Inbox {
    pub async fn run(self, client: &mut Client) -> anyhow::Result<Output> {
        if self.purge {
            self.purge(client).await
        } else {
            self.list(client).await
        }
    }

    async fn purge(self, client: &mut Client) -> anyhow::Result<Output> {
        let res = client
            .purge_inbox(PurgeInboxRequest {
                namespace: self.namespace,
                user_id: self.user.unwrap_or_default(),
                socket_id: self.socket.unwrap_or_default(),
            })
            .await
            .map_err(status)?
            .into_inner();
        Ok(Output::line(
            format!("purged {}", res.purged),
            json!({ "purged": res.purged }),
        ))
    }

    async fn list(self, client: &mut Client) -> anyhow::Result<Output> {
        let res = client
            .get_inbox(GetInboxRequest {
                namespace: self.namespace,
                user_id: self.user.unwrap_or_default(),
                socket_id: self.socket.unwrap_or_default(),
            })
            .await
            .map_err(status)?
            .into_inner();
        let text = res
            .entries
            .iter()
            .map(|e| format!("{}  {}  {}", e.message_id, e.event, e.args_json))
            .collect();
        let entries: Vec<Value> = res
            .entries
            .iter()
            .map(|e| {
                json!({
                    "message_id": e.message_id,
                    "event": e.event,
                    "args": json_or_null(&e.args_json),
                    "created_at_ms": e.created_at_ms,
                    "expires_at_ms": e.expires_at_ms,
                })
            })
            .collect();
        Ok(Output::new(text, json!({ "entries": entries })))
    }
}
