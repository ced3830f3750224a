//! `roomcast delivery`: where an at-least-once message stands.

use clap::Args;
use roomcast_api::v1::{DeliveryStatus, GetDeliveryRequest};
use serde_json::{json, Value};

use super::{status, Client, CommonFlags, Output};

#[derive(Args)]
pub struct Delivery {
    #[command(flatten)]
    pub common: CommonFlags,
    /// The message id an at-least-once emit returned
    message_id: String,
}

/// A delivery status as the user reads it: `pending`, `acked`, …
fn status_name(s: i32) -> String {
    DeliveryStatus::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("DELIVERY_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

impl Delivery {
    pub async fn run(self, client: &mut Client) -> anyhow::Result<Output> {
        let res = client
            .get_delivery(GetDeliveryRequest {
                message_id: self.message_id,
            })
            .await
            .map_err(status)?
            .into_inner();
        let mut text = vec![format!("{}  {}", res.message_id, status_name(res.status))];
        text.extend(res.recipients.iter().map(|r| {
            let who = if r.user_id.is_empty() {
                format!("socket {}", r.socket_id)
            } else {
                format!("user {}", r.user_id)
            };
            format!("  {who}  {}", status_name(r.status))
        }));
        let recipients: Vec<Value> = res
            .recipients
            .iter()
            .map(|r| {
                json!({
                    "user_id": r.user_id,
                    "socket_id": r.socket_id,
                    "status": status_name(r.status),
                    "done_at_ms": r.done_at_ms,
                })
            })
            .collect();
        Ok(Output::new(
            text,
            json!({
                "message_id": res.message_id,
                "status": status_name(res.status),
                "recipients": recipients,
                "created_at_ms": res.created_at_ms,
                "expires_at_ms": res.expires_at_ms,
            }),
        ))
    }
}
