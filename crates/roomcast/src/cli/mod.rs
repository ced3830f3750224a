//! `roomcast emit | sockets | rooms | join | leave | presence | disconnect | delivery | inbox`: the gRPC API
//! from a shell, against any standalone process or control plane.
//!
//! One module per command: it turns its flags into a request and the answer
//! into an [`Output`], which [`Renderer`] prints as text or, with `--json`, as
//! JSON. `common` holds the flags every command takes (server, API key,
//! `--json`, deadline) and opens the client; `selector` holds the flags that
//! select sockets.

mod common;
mod delivery;
mod disconnect;
mod emit;
mod inbox;
mod join;
mod leave;
mod presence;
mod render;
mod rooms;
mod selector;
mod sockets;

use clap::Subcommand;

use common::{Client, CommonFlags};
use render::{Output, Renderer};

#[derive(Subcommand)]
pub enum ApiCommand {
    /// Emit an event to the selected sockets (with --ack-timeout-ms: wait for acks)
    Emit(emit::Emit),
    /// Show where an at-least-once message stands (pending, acked, expired, purged)
    Delivery(delivery::Delivery),
    /// List (or --purge) the at-least-once messages waiting for a user or socket
    Inbox(inbox::Inbox),
    /// List the selected sockets (id, user, node, rooms)
    Sockets(sockets::Sockets),
    /// List a namespace's rooms with member counts
    Rooms(rooms::Rooms),
    /// Make the selected sockets join rooms
    Join(join::Join),
    /// Make the selected sockets leave rooms
    Leave(leave::Leave),
    /// Show users' status and a room's members, or --watch presence events
    Presence(presence::Presence),
    /// Disconnect the selected sockets
    Disconnect(disconnect::Disconnect),
}

impl ApiCommand {
    fn common(&self) -> &CommonFlags {
        match self {
            ApiCommand::Emit(c) => &c.common,
            ApiCommand::Delivery(c) => &c.common,
            ApiCommand::Inbox(c) => &c.common,
            ApiCommand::Sockets(c) => &c.common,
            ApiCommand::Rooms(c) => &c.common,
            ApiCommand::Join(c) => &c.common,
            ApiCommand::Leave(c) => &c.common,
            ApiCommand::Presence(c) => &c.common,
            ApiCommand::Disconnect(c) => &c.common,
        }
    }

    /// Whether the answer is a stream that lasts until interrupted (no
    /// deadline then).
    fn streams(&self) -> bool {
        matches!(self, ApiCommand::Presence(p) if p.watch)
    }
}

/// Runs one API command; prints the result on stdout.
pub async fn run(cmd: ApiCommand) -> anyhow::Result<()> {
    let common = cmd.common();
    let renderer = Renderer::new(common.json);
    let mut client = common.connect(cmd.streams()).await?;
    match cmd {
        ApiCommand::Emit(c) => renderer.print(&c.run(&mut client).await?),
        ApiCommand::Delivery(c) => renderer.print(&c.run(&mut client).await?),
        ApiCommand::Inbox(c) => renderer.print(&c.run(&mut client).await?),
        ApiCommand::Sockets(c) => renderer.print(&c.run(&mut client).await?),
        ApiCommand::Rooms(c) => renderer.print(&c.run(&mut client).await?),
        ApiCommand::Join(c) => renderer.print(&c.run(&mut client).await?),
        ApiCommand::Leave(c) => renderer.print(&c.run(&mut client).await?),
        ApiCommand::Presence(c) => c.run(&mut client, renderer).await?,
        ApiCommand::Disconnect(c) => renderer.print(&c.run(&mut client).await?),
    }
    Ok(())
}

/// A gRPC error as the user should read it.
fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// A JSON text from the API as a value; `null` when it is not JSON.
fn json_or_null(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}
