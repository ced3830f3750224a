//! `roomcast emit`: an event to the selected sockets, fire-and-forget, with
//! acks, or at least once.

use clap::Args;
use roomcast_api::v1::{EmitRequest, EmitWithAckRequest};
use serde_json::{json, Value};

use super::selector::SelectorFlags;
use super::{json_or_null, status, Client, CommonFlags, Output};

#[derive(Args)]
pub struct Emit {
    #[command(flatten)]
    pub common: CommonFlags,
    /// Event name
    event: String,
    /// Arguments as a JSON array
    #[arg(default_value = "")]
    args: String,
    #[command(flatten)]
    targets: SelectorFlags,
    /// Ask each socket for an ack and wait this long for them
    #[arg(long)]
    ack_timeout_ms: Option<u32>,
    /// May be dropped for sockets that are busy
    #[arg(long)]
    volatile: bool,
    /// At-least-once: resend until acked or this many ms passed (users and sockets only); prints the message id
    #[arg(long, conflicts_with = "ack_timeout_ms")]
    at_least_once_ttl_ms: Option<u32>,
}

impl Emit {
    pub async fn run(self, client: &mut Client) -> anyhow::Result<Output> {
        match self.ack_timeout_ms {
            Some(timeout_ms) => self.with_ack(client, timeout_ms).await,
            None => self.without_ack(client).await,
        }
    }

    /// Waits for each socket's ack; lists who answered what.
    async fn with_ack(self, client: &mut Client, timeout_ms: u32) -> anyhow::Result<Output> {
        let res = client
            .emit_with_ack(EmitWithAckRequest {
                to: Some(self.targets.selector()),
                event: self.event,
                args_json: self.args,
                attachments: Vec::new(),
                timeout_ms,
            })
            .await
            .map_err(status)?
            .into_inner();
        let mut text: Vec<String> = res
            .results
            .iter()
            .map(|r| {
                if r.acked {
                    format!("{}  acked  {}", r.socket_id, r.args_json)
                } else {
                    format!("{}  no ack", r.socket_id)
                }
            })
            .collect();
        if !res.complete {
            text.push("(incomplete: some edge did not answer in time)".to_owned());
        }
        let results: Vec<Value> = res
            .results
            .iter()
            .map(|r| {
                json!({
                    "socket_id": r.socket_id,
                    "node_id": r.node_id,
                    "acked": r.acked,
                    "args": json_or_null(&r.args_json),
                })
            })
            .collect();
        Ok(Output::new(
            text,
            json!({ "results": results, "complete": res.complete }),
        ))
    }

    /// Emits; an at-least-once emit shows its message id.
    async fn without_ack(self, client: &mut Client) -> anyhow::Result<Output> {
        let res = client
            .emit(EmitRequest {
                to: Some(self.targets.selector()),
                event: self.event,
                args_json: self.args,
                attachments: Vec::new(),
                volatile: self.volatile,
                at_least_once: self.at_least_once_ttl_ms.is_some(),
                ttl_ms: self.at_least_once_ttl_ms.unwrap_or(0),
            })
            .await
            .map_err(status)?
            .into_inner();
        Ok(if res.message_id.is_empty() {
            Output::line("emitted", json!({ "emitted": true }))
        } else {
            Output::line(
                res.message_id.clone(),
                json!({ "emitted": true, "message_id": res.message_id }),
            )
        })
    }
}
