//! Socket.IO load generator: opens many Socket.IO v5 / Engine.IO v4 WebSocket
//! connections, joins them to rooms, publishes at a fixed open-loop rate and
//! reports deliveries per second, publish→receive latency, lost and duplicate
//! deliveries, and the CPU and memory of the server processes and of itself.
//!
//! See `benches/README.md` for the options and how the comparison uses it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::Full;
use roomcast_api::v1::roomcast_client::RoomcastClient;
use roomcast_api::v1::{EmitRequest, RoomsRequest, Selector};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Channel;

/// Event name of every published message.
const EVENT: &str = "m";
/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on Linux).
const CLK_TCK: f64 = 100.0;
/// Number of latency histogram shards (connections are spread over them).
const SHARDS: usize = 32;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    /// roomcast: rooms from a JWT `rooms` claim (or JoinRooms), publish with gRPC Emit.
    Roomcast,
    /// A peer server: rooms from the CONNECT auth `{rooms: [...]}`, publish with `POST /emit`.
    Http,
}

#[derive(Parser, Debug)]
#[command(name = "roomcast-loadgen", about = "Socket.IO load generator")]
struct Args {
    /// How rooms are joined and events published.
    #[arg(long, value_enum, default_value_t = Target::Roomcast)]
    target: Target,
    /// Socket.IO server address (HOST:PORT); repeat to spread sockets round-robin.
    #[arg(long = "ws", required = true)]
    ws: Vec<SocketAddr>,
    /// roomcast gRPC address (HOST:PORT); repeat to spread emits round-robin.
    #[arg(long)]
    grpc: Vec<SocketAddr>,
    /// roomcast gRPC API key.
    #[arg(long)]
    api_key: Option<String>,
    /// roomcast HS256 secret: sockets connect with a token whose `rooms` claim
    /// holds their room. Without it they connect anonymously and are joined with
    /// gRPC JoinRooms by socket id.
    #[arg(long)]
    jwt_secret: Option<String>,
    /// Peer `POST /emit` address (HOST:PORT); repeat to spread emits round-robin.
    #[arg(long)]
    emit: Vec<SocketAddr>,
    /// HTTP connections per emit address.
    #[arg(long, default_value_t = 8)]
    emit_connections: usize,
    /// roomcast: publish over this many `EmitStream` calls per gRPC address
    /// (one message per event) instead of one unary `Emit` call per event.
    #[arg(long, default_value_t = 0)]
    emit_streams: usize,
    /// Sockets to open.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Rooms; socket i joins room i % rooms, publish j goes to room j % rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publish rate steps (publishes per second), comma separated; empty: no
    /// publishing (idle measurement only).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    rates: Vec<f64>,
    /// Length of each rate step.
    #[arg(long, default_value_t = 5.0)]
    step_secs: f64,
    /// Publish exactly this many messages per step instead of `rate * step_secs`.
    #[arg(long)]
    messages: Option<u64>,
    /// Size of the event's data object in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Spread connections over 127.0.0.1 ..= 127.0.0.N as source addresses.
    #[arg(long, default_value_t = 4)]
    source_ips: u8,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Emits in flight at most (the schedule is open-loop; when this is reached
    /// publishing falls behind and latency, measured from the scheduled time, shows it).
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Server process id to measure (CPU, RSS); repeat for several.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Seconds to stay connected and idle before measuring memory.
    #[arg(long, default_value_t = 0.0)]
    idle_secs: f64,
    /// Longest wait, once connected, for the servers to go quiet (under 10 % of
    /// a core for a second) before the first step, so that setup work
    /// (subscriptions, presence records) is not charged to it.
    #[arg(long, default_value_t = 20.0)]
    settle_secs: f64,
    /// Longest wait after a step for its deliveries to arrive.
    #[arg(long, default_value_t = 10.0)]
    drain_secs: f64,
    /// Stop after the first saturated step.
    #[arg(long)]
    stop_at_saturation: bool,
    /// Skip the warm-up round (one message per room, not measured).
    #[arg(long)]
    no_warmup: bool,
    /// Write the JSON report here (it is always printed to stdout too).
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Name of the system under test, for the report.
    #[arg(long, default_value = "")]
    label: String,
}

/// Counters of one step, shared by the publisher and every connection.
#[derive(Default)]
struct StepStats {
    expected: AtomicU64,
    unique: AtomicU64,
    dup: AtomicU64,
    published: AtomicU64,
    publish_errors: AtomicU64,
    first_publish_ns: AtomicU64,
    last_delivery_ns: AtomicU64,
}

struct Shared {
    base: Instant,
    steps: Vec<StepStats>,
    /// `hist[shard][step]`, microseconds.
    hist: Vec<Mutex<Vec<Histogram<u64>>>>,
    malformed: AtomicU64,
    disconnects: AtomicU64,
    last_any_delivery_ns: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One socket's view: which room-local sequence numbers it has seen.
struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    /// Marks `seq`; false if it was seen already.
    fn insert(&mut self, seq: u64) -> bool {
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        if word >= 1 << 26 {
            return true; // absurd sequence number; count it, do not allocate
        }
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let mask = 1u64 << (seq % 64);
        let fresh = self.bits[word] & mask == 0;
        self.bits[word] |= mask;
        fresh
    }
}

/// The number after `"key":` in `s`.
fn num_after(s: &str, key: &str) -> Option<u64> {
    let at = s.find(key)? + key.len();
    let digits: &str = &s[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    cpu_ticks: u64,
    rss_kib: u64,
}

fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kib,
    })
}

fn sample_servers(pids: &[u32]) -> Vec<ProcSample> {
    pids.iter()
        .map(|p| sample(Some(*p)).unwrap_or_default())
        .collect()
}

fn cpu_secs(before: &[ProcSample], after: &[ProcSample]) -> f64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / CLK_TCK)
        .sum()
}

/// Waits until the servers spent under 10 % of a core over one second, for
/// at most `max_secs`; returns how long that took.
async fn settle(pids: &[u32], max_secs: f64) -> f64 {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(max_secs);
    while Instant::now() < deadline {
        let before = sample_servers(pids);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cpu_secs(&before, &sample_servers(pids)) < 0.1 {
            break;
        }
    }
    started.elapsed().as_secs_f64()
}

fn total_rss(s: &[ProcSample]) -> u64 {
    s.iter().map(|p| p.rss_kib).sum()
}

/// The CONNECT auth object of socket `i` in `room`.
fn auth_for(args: &Args, i: usize, room: &str) -> anyhow::Result<Option<String>> {
    match args.target {
        Target::Http => Ok(Some(json!({ "rooms": [room] }).to_string())),
        Target::Roomcast => {
            let Some(secret) = &args.jwt_secret else {
                return Ok(None);
            };
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
                + 24 * 3600;
            let claims = json!({ "sub": format!("u{i}"), "exp": exp, "rooms": [room] });
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )?;
            Ok(Some(json!({ "token": token }).to_string()))
        }
    }
}

fn room_name(r: usize) -> String {
    format!("bench-{r}")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a socket and completes the Engine.IO open and Socket.IO CONNECT.
async fn open(
    server: SocketAddr,
    source: IpAddr,
    auth: Option<String>,
) -> anyhow::Result<(Ws, String)> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))
        .with_context(|| format!("bind {source}"))?;
    let stream = sock.connect(server).await.context("tcp connect")?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{server}/socket.io/?EIO=4&transport=websocket");
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("websocket handshake")?;
    // Engine.IO open packet.
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.as_str().starts_with('0') => {}
        other => bail!("expected an engine.io open packet, got {other:?}"),
    }
    let connect = match auth {
        Some(a) => format!("40{a}"),
        None => "40".to_owned(),
    };
    ws.send(Message::text(connect)).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let t = t.as_str();
                if let Some(rest) = t.strip_prefix("40") {
                    let v: serde_json::Value =
                        serde_json::from_str(rest).context("connect ack is not json")?;
                    let sid = v
                        .get("sid")
                        .and_then(|s| s.as_str())
                        .context("connect ack has no sid")?;
                    return Ok((ws, sid.to_owned()));
                } else if t.starts_with("44") {
                    bail!("connect refused: {t}");
                } else if t == "2" {
                    ws.send(Message::text("3")).await?;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before the connect ack"),
        }
    }
}

/// Reads a connected socket until it closes: answers pings, records deliveries.
async fn read_loop(mut ws: Ws, shard: usize, shared: Arc<Shared>) {
    let mut seen = Seen { bits: Vec::new() };
    while let Some(msg) = ws.next().await {
        let Ok(msg) = msg else { break };
        let t = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let t = t.as_str();
        if t == "2" {
            if ws.send(Message::text("3")).await.is_err() {
                break;
            }
            continue;
        }
        if !t.starts_with("42") {
            if t.starts_with("41") || t.starts_with('1') {
                break;
            }
            continue;
        }
        let now = shared.now_ns();
        let (Some(sent), Some(seq), Some(step)) = (
            num_after(t, "\"t\":"),
            num_after(t, "\"s\":"),
            num_after(t, "\"k\":"),
        ) else {
            shared.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(stats) = usize::try_from(step).ok().and_then(|k| shared.steps.get(k)) else {
            shared.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // Room-local sequence numbers of different steps are disjoint (they keep counting).
        if seen.insert(seq) {
            stats.unique.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.dup.fetch_add(1, Ordering::Relaxed);
        }
        stats.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        shared
            .last_any_delivery_ns
            .fetch_max(now, Ordering::Relaxed);
        let micros = now.saturating_sub(sent) / 1000;
        if let Ok(mut h) = shared.hist[shard].lock() {
            if let Some(h) = usize::try_from(step).ok().and_then(|k| h.get_mut(k)) {
                h.saturating_record(micros.max(1));
            }
        }
    }
    shared.disconnects.fetch_add(1, Ordering::Relaxed);
}

/// Where emits go.
#[derive(Clone)]
enum Publisher {
    Grpc {
        clients: Vec<RoomcastClient<Channel>>,
        auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    },
    /// Open `EmitStream` calls, each fed by its queue.
    GrpcStream {
        queues: Vec<mpsc::Sender<EmitRequest>>,
    },
    Http {
        queues: Vec<mpsc::Sender<(Bytes, oneshot::Sender<bool>)>>,
    },
}

impl Publisher {
    async fn new(args: &Args) -> anyhow::Result<Publisher> {
        match args.target {
            Target::Roomcast => {
                if args.grpc.is_empty() {
                    bail!("--target roomcast needs --grpc");
                }
                let mut clients = Vec::new();
                for addr in &args.grpc {
                    let channel = Channel::from_shared(format!("http://{addr}"))?
                        .connect()
                        .await
                        .with_context(|| format!("cannot connect to grpc {addr}"))?;
                    clients.push(RoomcastClient::new(channel));
                }
                let auth = match &args.api_key {
                    Some(k) => Some(format!("Bearer {k}").parse()?),
                    None => None,
                };
                if args.emit_streams == 0 {
                    return Ok(Publisher::Grpc { clients, auth });
                }
                let mut queues = Vec::new();
                for client in &clients {
                    for _ in 0..args.emit_streams {
                        queues.push(emit_stream(client.clone(), auth.clone()));
                    }
                }
                Ok(Publisher::GrpcStream { queues })
            }
            Target::Http => {
                if args.emit.is_empty() {
                    bail!("--target http needs --emit");
                }
                let mut queues = Vec::new();
                for addr in &args.emit {
                    for _ in 0..args.emit_connections.max(1) {
                        queues.push(http_worker(*addr).await?);
                    }
                }
                Ok(Publisher::Http { queues })
            }
        }
    }

    /// Sends one emit; true when the server accepted it (on a stream: when
    /// the stream took it).
    async fn emit(&self, n: u64, room: &str, data: &str) -> bool {
        let emit = || EmitRequest {
            to: Some(Selector {
                rooms: vec![room.to_owned()],
                ..Selector::default()
            }),
            event: EVENT.to_owned(),
            args_json: format!("[{data}]"),
            ..EmitRequest::default()
        };
        match self {
            Publisher::Grpc { clients, auth } => {
                let mut c = clients[(n as usize) % clients.len()].clone();
                let mut req = tonic::Request::new(emit());
                if let Some(a) = auth {
                    req.metadata_mut().insert("authorization", a.clone());
                }
                c.emit(req).await.is_ok()
            }
            Publisher::GrpcStream { queues } => {
                // One room's events always take the same stream: in order.
                let room_hash = room
                    .bytes()
                    .fold(0usize, |h, b| h.wrapping_mul(31) ^ b as usize);
                queues[room_hash % queues.len()].send(emit()).await.is_ok()
            }
            Publisher::Http { queues } => {
                let body = format!(r#"{{"room":"{room}","event":"{EVENT}","data":{data}}}"#);
                let (tx, rx) = oneshot::channel();
                let q = &queues[(n as usize) % queues.len()];
                if q.send((Bytes::from(body), tx)).await.is_err() {
                    return false;
                }
                rx.await.unwrap_or(false)
            }
        }
    }
}

/// An `EmitStream` call fed by the returned queue; it ends when the queue's
/// senders are gone, and reports a failure on stderr.
fn emit_stream(
    mut client: RoomcastClient<Channel>,
    auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> mpsc::Sender<EmitRequest> {
    let (tx, mut rx) = mpsc::channel::<EmitRequest>(1024);
    let messages = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut req = tonic::Request::new(messages);
    if let Some(a) = auth {
        req.metadata_mut().insert("authorization", a);
    }
    tokio::spawn(async move {
        if let Err(status) = client.emit_stream(req).await {
            eprintln!("loadgen: EmitStream failed: {status}");
        }
    });
    tx
}

/// One keep-alive HTTP/1.1 connection posting the bodies it is given to `/emit`.
async fn http_worker(
    addr: SocketAddr,
) -> anyhow::Result<mpsc::Sender<(Bytes, oneshot::Sender<bool>)>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to emit endpoint {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let (tx, mut rx) = mpsc::channel::<(Bytes, oneshot::Sender<bool>)>(1024);
    tokio::spawn(async move {
        while let Some((body, done)) = rx.recv().await {
            let ok = async {
                send.ready().await.ok()?;
                let req = hyper::Request::post("/emit")
                    .header("host", addr.to_string())
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .ok()?;
                let resp = send.send_request(req).await.ok()?;
                Some(resp.status().is_success())
            }
            .await
            .unwrap_or(false);
            let _ = done.send(ok);
        }
    });
    Ok(tx)
}

#[derive(Serialize)]
struct Latency {
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

#[derive(Serialize)]
struct StepReport {
    name: String,
    offered_publishes_per_s: f64,
    offered_deliveries_per_s: f64,
    published: u64,
    publish_errors: u64,
    expected: u64,
    delivered: u64,
    lost: u64,
    dup: u64,
    publish_secs: f64,
    deliveries_per_s: f64,
    latency: Latency,
    server_cpu_s: f64,
    server_cpu_util: f64,
    loadgen_cpu_s: f64,
    loadgen_cpu_util: f64,
    deliveries_per_server_cpu_s: f64,
    saturated: bool,
}

#[derive(Serialize)]
struct Report {
    label: String,
    target: Target,
    connections_requested: usize,
    connected: usize,
    connect_failures: usize,
    first_connect_error: Option<String>,
    connect_secs: f64,
    /// How long the servers took to go quiet after connecting (see
    /// `--settle-secs`).
    settled_secs: f64,
    rooms: usize,
    payload_bytes: usize,
    server_pids: Vec<u32>,
    server_rss_before_kib: u64,
    server_rss_connected_kib: u64,
    server_rss_per_conn_kib: f64,
    server_rss_end_kib: u64,
    loadgen_rss_connected_kib: u64,
    loadgen_cpu_s_total: f64,
    disconnects: u64,
    malformed: u64,
    steps: Vec<StepReport>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))?;
    // Sockets are dropped with the runtime; nothing else to clean up.
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.rooms == 0 || args.connections == 0 {
        bail!("--rooms and --connections must be at least 1");
    }
    if args.ws.is_empty() {
        bail!("give at least one --ws address");
    }
    let warmup = !args.no_warmup && !args.rates.is_empty();
    let mut step_names: Vec<(String, f64)> = Vec::new();
    if warmup {
        step_names.push(("warmup".into(), args.rates[0]));
    }
    for r in &args.rates {
        step_names.push((format!("{r}/s"), *r));
    }
    let shared = Arc::new(Shared {
        base: Instant::now(),
        steps: step_names.iter().map(|_| StepStats::default()).collect(),
        hist: (0..SHARDS)
            .map(|_| {
                Mutex::new(
                    step_names
                        .iter()
                        .map(|_| Histogram::new_with_bounds(1, 120_000_000, 2))
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap_or_default(),
                )
            })
            .collect(),
        malformed: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        last_any_delivery_ns: AtomicU64::new(0),
    });

    let publisher = Publisher::new(&args).await?;
    let server_before = sample_servers(&args.server_pids);
    let self_start = sample(None).unwrap_or_default();

    // Connect.
    let connect_started = Instant::now();
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, Result<String, String>)>();
    for i in 0..args.connections {
        let server = args.ws[i % args.ws.len()];
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (i % usize::from(args.source_ips.max(1))) as u8,
        ));
        let auth = auth_for(&args, i, &room_name(i % args.rooms))?;
        let permit = sem.clone().acquire_owned().await?;
        let done = done_tx.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let opened = tokio::time::timeout(Duration::from_secs(30), open(server, source, auth))
                .await
                .map_err(|_| anyhow::anyhow!("connect timed out"))
                .and_then(|r| r);
            drop(permit);
            match opened {
                Ok((ws, sid)) => {
                    let _ = done.send((i, Ok(sid)));
                    read_loop(ws, i % SHARDS, shared).await;
                }
                Err(e) => {
                    let _ = done.send((i, Err(format!("{e:#}"))));
                }
            }
        });
    }
    drop(done_tx);
    let mut sids: Vec<Option<String>> = vec![None; args.connections];
    let mut failures = 0usize;
    let mut first_error = None;
    for _ in 0..args.connections {
        let Some((i, r)) = done_rx.recv().await else {
            break;
        };
        match r {
            Ok(sid) => sids[i] = Some(sid),
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let connected = sids.iter().filter(|s| s.is_some()).count();
    eprintln!(
        "loadgen: {connected}/{} connected in {connect_secs:.1}s ({failures} failed{})",
        args.connections,
        first_error
            .as_ref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default()
    );

    // Anonymous roomcast sockets are joined by socket id.
    if args.target == Target::Roomcast && args.jwt_secret.is_none() {
        if let Publisher::Grpc { clients, auth } = &publisher {
            let mut by_room: HashMap<usize, Vec<String>> = HashMap::new();
            for (i, sid) in sids.iter().enumerate() {
                if let Some(sid) = sid {
                    by_room.entry(i % args.rooms).or_default().push(sid.clone());
                }
            }
            let mut c = clients[0].clone();
            for (room, ids) in by_room {
                for chunk in ids.chunks(1000) {
                    let mut req = tonic::Request::new(RoomsRequest {
                        target: Some(Selector {
                            socket_ids: chunk.to_vec(),
                            ..Selector::default()
                        }),
                        rooms: vec![room_name(room)],
                    });
                    if let Some(a) = auth {
                        req.metadata_mut().insert("authorization", a.clone());
                    }
                    c.join_rooms(req).await.context("join rooms")?;
                }
            }
        }
    }
    let mut members = vec![0u64; args.rooms];
    for (i, s) in sids.iter().enumerate() {
        if s.is_some() {
            members[i % args.rooms] += 1;
        }
    }

    if args.idle_secs > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    }
    let server_connected = sample_servers(&args.server_pids);
    let self_connected = sample(None).unwrap_or_default();
    let settled_secs = if step_names.is_empty() {
        0.0
    } else {
        settle(&args.server_pids, args.settle_secs).await
    };

    // Publish, step by step.
    let members = Arc::new(members);
    let room_seq: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.rooms).map(|_| AtomicU64::new(0)).collect());
    let in_flight = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let pad_base = r#"{"t":000000000000,"s":000000,"k":0,"r":000000,"p":""}"#.len();
    let pad = "x".repeat(args.payload_bytes.saturating_sub(pad_base));
    let mut steps = Vec::new();
    let mut publish_counter = 0u64;
    for (k, (name, rate)) in step_names.iter().enumerate() {
        let stats = &shared.steps[k];
        let is_warmup = warmup && k == 0;
        let count = if is_warmup {
            args.rooms as u64
        } else {
            args.messages
                .unwrap_or_else(|| (rate * args.step_secs).round().max(1.0) as u64)
        };
        let server_s0 = sample_servers(&args.server_pids);
        let self_s0 = sample(None).unwrap_or_default();
        let start = Instant::now();
        stats
            .first_publish_ns
            .store(shared.now_ns(), Ordering::Relaxed);
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        for j in 0..count {
            let due = start + interval.mul_f64(j as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            let permit = in_flight.clone().acquire_owned().await?;
            let room = usize::try_from(publish_counter).unwrap_or(0) % args.rooms;
            publish_counter += 1;
            let seq = room_seq[room].fetch_add(1, Ordering::Relaxed);
            let t = u64::try_from(due.duration_since(shared.base).as_nanos()).unwrap_or(0);
            let data = format!(r#"{{"t":{t},"s":{seq},"k":{k},"r":{room},"p":"{pad}"}}"#);
            stats.expected.fetch_add(members[room], Ordering::Relaxed);
            let publisher = publisher.clone();
            let shared = shared.clone();
            let members = members.clone();
            let n = publish_counter;
            tokio::spawn(async move {
                let stats = &shared.steps[k];
                let sent = tokio::time::timeout(
                    Duration::from_secs(10),
                    publisher.emit(n, &room_name(room), &data),
                )
                .await
                .unwrap_or(false);
                if sent {
                    stats.published.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                    stats.expected.fetch_sub(members[room], Ordering::Relaxed);
                }
                drop(permit);
            });
        }
        let publish_secs = start.elapsed().as_secs_f64();
        // Wait for the emits in flight, then for deliveries to stop arriving.
        let _all = in_flight
            .acquire_many(u32::try_from(args.max_in_flight.max(1)).unwrap_or(u32::MAX))
            .await?;
        drop(_all);
        let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_secs);
        let mut last_progress = (stats.unique.load(Ordering::Relaxed), Instant::now());
        loop {
            let u = stats.unique.load(Ordering::Relaxed);
            if u >= stats.expected.load(Ordering::Relaxed) || Instant::now() >= drain_deadline {
                break;
            }
            if u != last_progress.0 {
                last_progress = (u, Instant::now());
            } else if last_progress.1.elapsed() > Duration::from_secs(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let server_s1 = sample_servers(&args.server_pids);
        let self_s1 = sample(None).unwrap_or_default();
        let step_secs_total = start.elapsed().as_secs_f64();

        let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 2)?;
        for shard in &shared.hist {
            if let Ok(s) = shard.lock() {
                if let Some(sh) = s.get(k) {
                    h.add(sh)?;
                }
            }
        }
        let expected = stats.expected.load(Ordering::Relaxed);
        let delivered = stats.unique.load(Ordering::Relaxed);
        let dup = stats.dup.load(Ordering::Relaxed);
        let lost = expected.saturating_sub(delivered);
        let span_ns = stats
            .last_delivery_ns
            .load(Ordering::Relaxed)
            .saturating_sub(stats.first_publish_ns.load(Ordering::Relaxed));
        let span = (span_ns as f64 / 1e9).max(publish_secs).max(1e-3);
        let deliveries_per_s = delivered as f64 / span;
        let server_cpu_s = cpu_secs(&server_s0, &server_s1);
        let loadgen_cpu_s = cpu_secs(&[self_s0], &[self_s1]);
        let offered_deliveries_per_s = rate * expected as f64 / count.max(1) as f64;
        let latency = Latency {
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        };
        // Saturated: something lost, p99 over a second, or a backlog still
        // being delivered more than a second after the last publish.
        let saturated = lost > 0 || latency.p99_us > 1_000_000 || span > publish_secs + 1.0;
        let report = StepReport {
            name: name.clone(),
            offered_publishes_per_s: *rate,
            offered_deliveries_per_s,
            published: stats.published.load(Ordering::Relaxed),
            publish_errors: stats.publish_errors.load(Ordering::Relaxed),
            expected,
            delivered,
            lost,
            dup,
            publish_secs,
            deliveries_per_s,
            latency,
            server_cpu_s,
            server_cpu_util: server_cpu_s / step_secs_total,
            loadgen_cpu_s,
            loadgen_cpu_util: loadgen_cpu_s / step_secs_total,
            deliveries_per_server_cpu_s: if server_cpu_s > 0.0 {
                delivered as f64 / server_cpu_s
            } else {
                0.0
            },
            saturated,
        };
        eprintln!("{}", markdown_row(&args.label, &report));
        let stop = args.stop_at_saturation && saturated && !is_warmup;
        steps.push(report);
        if stop {
            break;
        }
    }

    let server_end = sample_servers(&args.server_pids);
    let self_end = sample(None).unwrap_or_default();
    let rss_before = total_rss(&server_before);
    let rss_connected = total_rss(&server_connected);
    let report = Report {
        label: args.label.clone(),
        target: args.target,
        connections_requested: args.connections,
        connected,
        connect_failures: failures,
        first_connect_error: first_error,
        connect_secs,
        settled_secs,
        rooms: args.rooms,
        payload_bytes: args.payload_bytes,
        server_pids: args.server_pids.clone(),
        server_rss_before_kib: rss_before,
        server_rss_connected_kib: rss_connected,
        server_rss_per_conn_kib: if connected > 0 {
            rss_connected.saturating_sub(rss_before) as f64 / connected as f64
        } else {
            0.0
        },
        server_rss_end_kib: total_rss(&server_end),
        loadgen_rss_connected_kib: self_connected.rss_kib,
        loadgen_cpu_s_total: cpu_secs(&[self_start], &[self_end]),
        disconnects: shared.disconnects.load(Ordering::Relaxed),
        malformed: shared.malformed.load(Ordering::Relaxed),
        steps,
    };
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{text}");
    Ok(())
}

/// `| label | step | offered deliv/s | deliv/s | p50 | p99 | p99.9 | lost | dup | server CPU | loadgen CPU | deliv per server CPU-s |`
fn markdown_row(label: &str, s: &StepReport) -> String {
    format!(
        "| {label} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {:.0}% | {:.0}% | {:.0} |",
        s.name,
        s.offered_deliveries_per_s,
        s.deliveries_per_s,
        s.latency.p50_us as f64 / 1000.0,
        s.latency.p99_us as f64 / 1000.0,
        s.latency.p999_us as f64 / 1000.0,
        s.lost,
        s.dup,
        s.server_cpu_util * 100.0,
        s.loadgen_cpu_util * 100.0,
        s.deliveries_per_server_cpu_s,
    )
}
