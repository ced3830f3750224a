//! `roomcast emit | sockets | rooms | join | leave | presence | disconnect | delivery | inbox`: the gRPC API
//! from a shell, against any standalone process or control plane.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use roomcast_api::v1::roomcast_client::RoomcastClient;
use roomcast_api::v1::{
    DeliveryStatus, DisconnectSocketsRequest, EmitRequest, EmitWithAckRequest, FetchSocketsRequest,
    GetDeliveryRequest, GetInboxRequest, GetPresenceRequest, ListRoomsRequest, PurgeInboxRequest,
    RoomsRequest, Selector, WatchPresenceRequest,
};
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Where the API is and how to talk to it.
#[derive(Args, Clone)]
pub struct Conn {
    /// gRPC address of a standalone process or control plane
    #[arg(
        long,
        env = "ROOMCAST_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// API key, sent as `authorization: Bearer KEY`
    #[arg(long, env = "ROOMCAST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PEM CA certificate that verifies an https:// server (otherwise the system roots)
    #[arg(long, env = "ROOMCAST_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Deadline of the call, ms
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// Which sockets: the union of rooms, sockets and users (the whole namespace
/// when none is given), less the exceptions.
#[derive(Args)]
pub struct Sel {
    /// Namespace
    #[arg(long, short, default_value = "/")]
    namespace: String,
    /// A room; repeat for several
    #[arg(long = "room", short, allow_hyphen_values = true, value_parser = name)]
    rooms: Vec<String>,
    /// A socket id; repeat for several
    #[arg(long = "socket", short, allow_hyphen_values = true, value_parser = name)]
    sockets: Vec<String>,
    /// A user id; repeat for several
    #[arg(long = "user", short, allow_hyphen_values = true, value_parser = name)]
    users: Vec<String>,
    /// Leave out sockets in this room; repeat for several
    #[arg(long = "except-room", allow_hyphen_values = true, value_parser = name)]
    except_rooms: Vec<String>,
    /// Leave out this socket; repeat for several
    #[arg(long = "except-socket", allow_hyphen_values = true, value_parser = name)]
    except_sockets: Vec<String>,
}

impl Sel {
    fn selector(self) -> Selector {
        Selector {
            namespace: self.namespace,
            rooms: self.rooms,
            socket_ids: self.sockets,
            user_ids: self.users,
            except_rooms: self.except_rooms,
            except_socket_ids: self.except_sockets,
        }
    }
}

#[derive(Subcommand)]
pub enum ApiCommand {
    /// Emit an event to the selected sockets (with --ack-timeout-ms: wait for acks)
    Emit {
        #[command(flatten)]
        conn: Conn,
        /// Event name
        event: String,
        /// Arguments as a JSON array
        #[arg(default_value = "")]
        args: String,
        #[command(flatten)]
        sel: Sel,
        /// Ask each socket for an ack and wait this long for them
        #[arg(long)]
        ack_timeout_ms: Option<u32>,
        /// May be dropped for sockets that are busy
        #[arg(long)]
        volatile: bool,
        /// At-least-once: resend until acked or this many ms passed (users and sockets only); prints the message id
        #[arg(long, conflicts_with = "ack_timeout_ms")]
        at_least_once_ttl_ms: Option<u32>,
    },
    /// Show where an at-least-once message stands (pending, acked, expired, purged)
    Delivery {
        #[command(flatten)]
        conn: Conn,
        /// The message id an at-least-once emit returned
        message_id: String,
    },
    /// List (or --purge) the at-least-once messages waiting for a user or socket
    Inbox {
        #[command(flatten)]
        conn: Conn,
        /// The user
        #[arg(long, short, required_unless_present = "socket", allow_hyphen_values = true, value_parser = name)]
        user: Option<String>,
        /// Or the socket
        #[arg(long, short, conflicts_with = "user", allow_hyphen_values = true, value_parser = name)]
        socket: Option<String>,
        /// Namespace
        #[arg(long, short, default_value = "/")]
        namespace: String,
        /// Drop the waiting messages instead of listing them
        #[arg(long)]
        purge: bool,
    },
    /// List the selected sockets (id, user, node, rooms)
    Sockets {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        sel: Sel,
    },
    /// List a namespace's rooms with member counts
    Rooms {
        #[command(flatten)]
        conn: Conn,
        /// Namespace
        #[arg(long, short, default_value = "/")]
        namespace: String,
    },
    /// Make the selected sockets join rooms
    Join {
        #[command(flatten)]
        conn: Conn,
        /// Rooms to join
        #[arg(required = true, value_name = "ROOM")]
        join: Vec<String>,
        #[command(flatten)]
        sel: Sel,
    },
    /// Make the selected sockets leave rooms
    Leave {
        #[command(flatten)]
        conn: Conn,
        /// Rooms to leave
        #[arg(required = true, value_name = "ROOM")]
        leave: Vec<String>,
        #[command(flatten)]
        sel: Sel,
    },
    /// Show users' status and a room's members, or --watch presence events
    Presence {
        #[command(flatten)]
        conn: Conn,
        /// A user whose status to show; repeat for several
        #[arg(long = "user", short, allow_hyphen_values = true, value_parser = name)]
        users: Vec<String>,
        /// A room whose members to show
        #[arg(long, short, allow_hyphen_values = true, value_parser = name)]
        room: Option<String>,
        /// Namespace of the room (and of --watch's filter)
        #[arg(long, short, default_value = "")]
        namespace: String,
        /// Stream events (connect, disconnect, join, leave, online, offline) until interrupted
        #[arg(long)]
        watch: bool,
    },
    /// Disconnect the selected sockets
    Disconnect {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        sel: Sel,
        /// Close the whole connection, not only the namespace
        #[arg(long)]
        close: bool,
    },
}

/// Runs one API command; prints the result on stdout.
pub async fn run(cmd: ApiCommand) -> anyhow::Result<()> {
    let conn = match &cmd {
        ApiCommand::Emit { conn, .. }
        | ApiCommand::Sockets { conn, .. }
        | ApiCommand::Rooms { conn, .. }
        | ApiCommand::Join { conn, .. }
        | ApiCommand::Leave { conn, .. }
        | ApiCommand::Presence { conn, .. }
        | ApiCommand::Disconnect { conn, .. }
        | ApiCommand::Delivery { conn, .. }
        | ApiCommand::Inbox { conn, .. } => conn.clone(),
    };
    let streaming = matches!(cmd, ApiCommand::Presence { watch: true, .. });
    let mut endpoint = Channel::from_shared(conn.server.clone())
        .with_context(|| format!("invalid server address {:?}", conn.server))?
        .connect_timeout(Duration::from_millis(conn.timeout_ms));
    if !streaming {
        endpoint = endpoint.timeout(Duration::from_millis(conn.timeout_ms));
    }
    if let Some(path) = &conn.ca_file {
        let ca = std::fs::read(path)
            .with_context(|| format!("cannot read ca file {}", path.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .context("invalid tls settings")?;
    } else if conn.server.starts_with("https://") {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_enabled_roots())
            .context("invalid tls settings")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", conn.server))?;
    let auth = match &conn.api_key {
        Some(key) => Some(
            MetadataValue::try_from(format!("Bearer {key}"))
                .context("the api key is not a valid header value")?,
        ),
        None => None,
    };
    let mut client =
        RoomcastClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            if let Some(v) = &auth {
                req.metadata_mut().insert("authorization", v.clone());
            }
            Ok(req)
        });
    let out: Value = match cmd {
        ApiCommand::Emit {
            event,
            args,
            sel,
            ack_timeout_ms: Some(timeout_ms),
            ..
        } => {
            let res = client
                .emit_with_ack(EmitWithAckRequest {
                    to: Some(sel.selector()),
                    event,
                    args_json: args,
                    attachments: Vec::new(),
                    timeout_ms,
                })
                .await
                .map_err(status)?
                .into_inner();
            let results: Vec<Value> = res
                .results
                .iter()
                .map(|r| {
                    json!({
                        "socket_id": r.socket_id,
                        "node_id": r.node_id,
                        "acked": r.acked,
                        "args": serde_json::from_str::<Value>(&r.args_json).unwrap_or(Value::Null),
                    })
                })
                .collect();
            if !conn.json {
                for r in &res.results {
                    if r.acked {
                        println!("{}  acked  {}", r.socket_id, r.args_json);
                    } else {
                        println!("{}  no ack", r.socket_id);
                    }
                }
                if !res.complete {
                    println!("(incomplete: some edge did not answer in time)");
                }
            }
            json!({ "results": results, "complete": res.complete })
        }
        ApiCommand::Emit {
            event,
            args,
            sel,
            volatile,
            ack_timeout_ms: None,
            at_least_once_ttl_ms,
            ..
        } => {
            let res = client
                .emit(EmitRequest {
                    to: Some(sel.selector()),
                    event,
                    args_json: args,
                    attachments: Vec::new(),
                    volatile,
                    at_least_once: at_least_once_ttl_ms.is_some(),
                    ttl_ms: at_least_once_ttl_ms.unwrap_or(0),
                })
                .await
                .map_err(status)?
                .into_inner();
            if res.message_id.is_empty() {
                if !conn.json {
                    println!("emitted");
                }
                json!({ "emitted": true })
            } else {
                if !conn.json {
                    println!("{}", res.message_id);
                }
                json!({ "emitted": true, "message_id": res.message_id })
            }
        }
        ApiCommand::Delivery { message_id, .. } => {
            let res = client
                .get_delivery(GetDeliveryRequest { message_id })
                .await
                .map_err(status)?
                .into_inner();
            let name = |s: i32| {
                DeliveryStatus::try_from(s)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("DELIVERY_STATUS_")
                            .to_lowercase()
                    })
                    .unwrap_or_default()
            };
            let recipients: Vec<Value> = res
                .recipients
                .iter()
                .map(|r| {
                    json!({
                        "user_id": r.user_id,
                        "socket_id": r.socket_id,
                        "status": name(r.status),
                        "done_at_ms": r.done_at_ms,
                    })
                })
                .collect();
            if !conn.json {
                println!("{}  {}", res.message_id, name(res.status));
                for r in &res.recipients {
                    let who = if r.user_id.is_empty() {
                        format!("socket {}", r.socket_id)
                    } else {
                        format!("user {}", r.user_id)
                    };
                    println!("  {who}  {}", name(r.status));
                }
            }
            json!({
                "message_id": res.message_id,
                "status": name(res.status),
                "recipients": recipients,
                "created_at_ms": res.created_at_ms,
                "expires_at_ms": res.expires_at_ms,
            })
        }
        ApiCommand::Inbox {
            user,
            socket,
            namespace,
            purge: true,
            ..
        } => {
            let res = client
                .purge_inbox(PurgeInboxRequest {
                    namespace,
                    user_id: user.unwrap_or_default(),
                    socket_id: socket.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if !conn.json {
                println!("purged {}", res.purged);
            }
            json!({ "purged": res.purged })
        }
        ApiCommand::Inbox {
            user,
            socket,
            namespace,
            ..
        } => {
            let res = client
                .get_inbox(GetInboxRequest {
                    namespace,
                    user_id: user.unwrap_or_default(),
                    socket_id: socket.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if !conn.json {
                for e in &res.entries {
                    println!("{}  {}  {}", e.message_id, e.event, e.args_json);
                }
            }
            let entries: Vec<Value> = res
                .entries
                .iter()
                .map(|e| {
                    json!({
                        "message_id": e.message_id,
                        "event": e.event,
                        "args": serde_json::from_str::<Value>(&e.args_json).unwrap_or(Value::Null),
                        "created_at_ms": e.created_at_ms,
                        "expires_at_ms": e.expires_at_ms,
                    })
                })
                .collect();
            json!({ "entries": entries })
        }
        ApiCommand::Sockets { sel, .. } => {
            let res = client
                .fetch_sockets(FetchSocketsRequest {
                    target: Some(sel.selector()),
                })
                .await
                .map_err(status)?
                .into_inner();
            if !conn.json {
                println!(
                    "{:<22} {:<16} {:<22} {:<10} rooms",
                    "socket", "user", "node", "transport"
                );
                for s in &res.sockets {
                    let user = if s.user_id.is_empty() {
                        "-"
                    } else {
                        s.user_id.as_str()
                    };
                    println!(
                        "{:<22} {:<16} {:<22} {:<10} {}",
                        s.id,
                        user,
                        s.node_id,
                        s.transport,
                        s.rooms.join(",")
                    );
                }
            }
            let sockets: Vec<Value> = res
                .sockets
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id, "user_id": s.user_id, "namespace": s.namespace,
                        "node_id": s.node_id, "rooms": s.rooms,
                        "connected_at_ms": s.connected_at_ms, "remote_addr": s.remote_addr,
                        "transport": s.transport, "query": s.query, "headers": s.headers,
                        "data": serde_json::from_str::<Value>(&s.data_json).unwrap_or(Value::Null),
                    })
                })
                .collect();
            json!({ "sockets": sockets })
        }
        ApiCommand::Rooms { namespace, .. } => {
            let res = client
                .list_rooms(ListRoomsRequest { namespace })
                .await
                .map_err(status)?
                .into_inner();
            if !conn.json {
                for r in &res.rooms {
                    println!("{:>8}  {}", r.members, r.name);
                }
            }
            let rooms: Vec<Value> = res
                .rooms
                .iter()
                .map(|r| json!({ "name": r.name, "members": r.members }))
                .collect();
            json!({ "rooms": rooms })
        }
        ApiCommand::Join { join, sel, .. } => {
            let req = RoomsRequest {
                target: Some(sel.selector()),
                rooms: join,
            };
            client.join_rooms(req).await.map_err(status)?;
            if !conn.json {
                println!("joined");
            }
            json!({ "joined": true })
        }
        ApiCommand::Leave { leave, sel, .. } => {
            let req = RoomsRequest {
                target: Some(sel.selector()),
                rooms: leave,
            };
            client.leave_rooms(req).await.map_err(status)?;
            if !conn.json {
                println!("left");
            }
            json!({ "left": true })
        }
        ApiCommand::Presence {
            users,
            namespace,
            watch: true,
            room,
            ..
        } => {
            let mut stream = client
                .watch_presence(WatchPresenceRequest {
                    namespace,
                    room: room.unwrap_or_default(),
                    user_ids: users,
                })
                .await
                .map_err(status)?
                .into_inner();
            while let Some(ev) = stream.message().await.map_err(status)? {
                if conn.json {
                    let line = json!({
                        "kind": ev.kind, "user_id": ev.user_id, "socket_id": ev.socket_id,
                        "namespace": ev.namespace, "node_id": ev.node_id, "rooms": ev.rooms,
                        "at_ms": ev.at_ms, "last_seen_ms": ev.last_seen_ms,
                    });
                    println!("{line}");
                } else {
                    let user = if ev.user_id.is_empty() {
                        "-"
                    } else {
                        ev.user_id.as_str()
                    };
                    println!(
                        "{:<10} {:<16} {:<22} {} {}",
                        ev.kind,
                        user,
                        ev.socket_id,
                        ev.namespace,
                        ev.rooms.join(",")
                    );
                }
            }
            return Ok(());
        }
        ApiCommand::Presence {
            users,
            namespace,
            room,
            ..
        } => {
            let res = client
                .get_presence(GetPresenceRequest {
                    user_ids: users,
                    room: room.clone().unwrap_or_default(),
                    namespace,
                })
                .await
                .map_err(status)?
                .into_inner();
            if !conn.json {
                for u in &res.users {
                    let status = if u.online { "online" } else { "offline" };
                    println!(
                        "{:<16} {:<8} sockets={} last_seen_ms={}",
                        u.user_id, status, u.sockets, u.last_seen_ms
                    );
                }
                if let Some(room) = &room {
                    println!(
                        "room {room}: {} users, {} sockets: {}",
                        res.room_user_ids.len(),
                        res.room_sockets.len(),
                        res.room_user_ids.join(",")
                    );
                }
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
            json!({
                "users": users,
                "room_user_ids": res.room_user_ids,
                "room_sockets": res.room_sockets.iter().map(|s| json!({
                    "id": s.id, "user_id": s.user_id, "node_id": s.node_id,
                })).collect::<Vec<_>>(),
            })
        }
        ApiCommand::Disconnect { sel, close, .. } => {
            let res = client
                .disconnect_sockets(DisconnectSocketsRequest {
                    target: Some(sel.selector()),
                    close,
                })
                .await
                .map_err(status)?
                .into_inner();
            if !conn.json {
                println!("disconnected {}", res.disconnected);
            }
            json!({ "disconnected": res.disconnected })
        }
    };
    if conn.json {
        println!("{out}");
    }
    Ok(())
}

/// A gRPC error as the user should read it.
/// A room, socket id or user given to a flag. Socket ids (like rooms and
/// users) may begin with `-`, so these flags take such values; a value that
/// begins with `--` is a flag written where the value was forgotten.
fn name(value: &str) -> Result<String, String> {
    if value.starts_with("--") {
        return Err(format!("a value is missing before {value}"));
    }
    Ok(value.to_owned())
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}
