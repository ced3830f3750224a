//! `roomcast presence`: users' status and a room's members, or (`--watch`)
//! the stream of presence events.

use clap::Args;
use roomcast_api::v1::{GetPresenceRequest, PresenceEvent, WatchPresenceRequest};
use serde_json::{json, Value};

use super::selector::target_name;
use super::{status, Client, CommonFlags, Output, Renderer};

#[derive(Args)]
pub struct Presence {
    #[command(flatten)]
    pub common: CommonFlags,
    /// A user whose status to show; repeat for several
    #[arg(long = "user", short, allow_hyphen_values = true, value_parser = target_name)]
    users: Vec<String>,
    /// A room whose members to show
    #[arg(long, short, allow_hyphen_values = true, value_parser = target_name)]
    room: Option<String>,
    /// Namespace of the room (and of --watch's filter)
    #[arg(long, short, default_value = "")]
    namespace: String,
    /// Stream events (connect, disconnect, join, leave, online, offline) until interrupted
    #[arg(long)]
    pub watch: bool,
}

impl Presence {
    pub async fn run(self, client: &mut Client, renderer: Renderer) -> anyhow::Result<()> {
        if self.watch {
            self.watch(client, renderer).await
        } else {
            renderer.print(&self.get(client).await?);
            Ok(())
        }
    }

    /// Prints each event as it comes, until the stream ends.
    async fn watch(self, client: &mut Client, renderer: Renderer) -> anyhow::Result<()> {
        let mut stream = client
            .watch_presence(WatchPresenceRequest {
                namespace: self.namespace,
                room: self.room.unwrap_or_default(),
                user_ids: self.users,
            })
            .await
            .map_err(status)?
            .into_inner();
        while let Some(ev) = stream.message().await.map_err(status)? {
            renderer.print(&event(&ev));
        }
        Ok(())
    }

    async fn get(self, client: &mut Client) -> anyhow::Result<Output> {
        let res = client
            .get_presence(GetPresenceRequest {
                user_ids: self.users,
                room: self.room.clone().unwrap_or_default(),
                namespace: self.namespace,
            })
            .await
            .map_err(status)?
            .into_inner();
        let mut text: Vec<String> = res
            .users
            .iter()
            .map(|u| {
                let status = if u.online { "online" } else { "offline" };
                format!(
                    "{:<16} {:<8} sockets={} last_seen_ms={}",
                    u.user_id, status, u.sockets, u.last_seen_ms
                )
            })
            .collect();
        if let Some(room) = &self.room {
            text.push(format!(
                "room {room}: {} users, {} sockets: {}",
                res.room_user_ids.len(),
                res.room_sockets.len(),
                res.room_user_ids.join(",")
            ));
        }
        let users: Vec<Value> = res
            .users
            .iter()
            .map(|u| {
                json!({
                    "user_id": u.user_id, "online": u.online,
                    "last_seen_ms": u.last_seen_ms, "sockets": u.sockets,
                })
            })
            .collect();
        let room_sockets: Vec<Value> = res
            .room_sockets
            .iter()
            .map(|s| json!({ "id": s.id, "user_id": s.user_id, "node_id": s.node_id }))
            .collect();
        Ok(Output::new(
            text,
            json!({
                "users": users,
                "room_user_ids": res.room_user_ids,
                "room_sockets": room_sockets,
            }),
        ))
    }
}

/// One presence event, as one line.
fn event(ev: &PresenceEvent) -> Output {
    let user = if ev.user_id.is_empty() {
        "-"
    } else {
        ev.user_id.as_str()
    };
    Output::line(
        format!(
            "{:<10} {:<16} {:<22} {} {}",
            ev.kind,
            user,
            ev.socket_id,
            ev.namespace,
            ev.rooms.join(",")
        ),
        json!({
            "kind": ev.kind, "user_id": ev.user_id, "socket_id": ev.socket_id,
            "namespace": ev.namespace, "node_id": ev.node_id, "rooms": ev.rooms,
            "at_ms": ev.at_ms, "last_seen_ms": ev.last_seen_ms,
        }),
    )
}
