//! HTTP requests to a running edge's Engine.IO endpoint, through its real
//! router: query parsing, the handshake (bearer header, CORS origin), polling
//! POST bodies, and behind them the Engine.IO and Socket.IO handling of a
//! session (CONNECT with its auth object and JWT, connection state recovery's
//! pid and offset, events, acks, binary attachments, disconnects).
//!
//! Each input first opens a polling session, as a client would, then sends up
//! to 8 requests, separated by NUL bytes. A request is `METHOD URI`, header
//! lines `name: value`, an empty line, and the body; `SID` in the URI stands
//! for the open session's id. A polling GET on that session is not sent (it
//! would wait for the next ping). At the end every session the input opened is
//! closed and the tasks it spawned run to their end, so inputs do not
//! accumulate state.
//!
//! Property: never panics; every answer is one of the statuses the endpoint
//! documents.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::Query;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use roomcast_bus::memory::{MemoryHistory, MemorySessions};
use roomcast_bus::recovery::{Recovery, RecoveryConfig};
use roomcast_bus::subject::Subjects;
use roomcast_bus::{Bus, MemoryBus};
use roomcast_edge::{Authenticator, Edge, EdgeConfig, JwtConfig};
use tower::ServiceExt;

const MAX_REQUESTS: usize = 8;
const PATH: &str = "/socket.io/";

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let auth = Authenticator::new(
            Some(&JwtConfig {
                hs256_secret: Some(b"fuzz-secret".to_vec()),
                rooms_claim: "rooms".into(),
                ..JwtConfig::default()
            }),
            true,
        )
        .expect("fuzz jwt configuration");
        let config = EdgeConfig {
            namespaces: vec!["/".into(), "/admin".into()],
            cors_origins: vec!["http://localhost".into()],
            max_payload: 64 * 1024,
            ..EdgeConfig::default()
        };
        // Connection state recovery on, so CONNECTs with a pid and an offset
        // reach the recovery path too.
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
        let rcfg = RecoveryConfig {
            rooms: vec!["*".into()],
            ..RecoveryConfig::default()
        };
        let recovery = Recovery {
            history: Arc::new(MemoryHistory::new(
                bus.clone(),
                Subjects::new("roomcast"),
                &rcfg,
            )),
            sessions: Arc::new(MemorySessions::new(rcfg.window)),
            config: rcfg,
        };
        let edge = runtime
            .block_on(Edge::start(config, auth, bus, None, Some(recovery)))
            .expect("edge starts");
        Harness {
            runtime,
            router: edge.router(),
        }
    })
}

/// Sends one request; returns the status and the body.
async fn send(router: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = match router.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    let status = res.status();
    let body = match res.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    (status, body)
}

/// The sid of an open packet (`0{"sid":…}`) in a polling response.
fn open_sid(body: &[u8]) -> Option<String> {
    let json = body.strip_prefix(b"0")?;
    let end = json.iter().position(|&b| b == 0x1e).unwrap_or(json.len());
    let v: serde_json::Value = serde_json::from_slice(&json[..end]).ok()?;
    Some(v.get("sid")?.as_str()?.to_owned())
}

async fn open(router: &axum::Router) -> String {
    let req = Request::get(format!("{PATH}?EIO=4&transport=polling"))
        .body(Body::empty())
        .expect("handshake request");
    let (status, body) = send(router, req).await;
    assert_eq!(status, StatusCode::OK);
    open_sid(&body).expect("handshake answers an open packet")
}

async fn close(router: &axum::Router, sid: &str) {
    let req = Request::post(format!("{PATH}?EIO=4&transport=polling&sid={sid}"))
        .body(Body::from("1"))
        .expect("close request");
    let _ = send(router, req).await;
}

/// Parses one request of the input; `None` if it is not one `http` can build.
fn parse(raw: &[u8], sid: &str) -> Option<Request<Body>> {
    let (head, body) = match raw.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&raw[..i], &raw[i + 2..]),
        None => (raw, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let (method, uri) = lines.next()?.split_once(' ')?;
    let uri = uri.replace("SID", sid);
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).ok()?)
        .uri(uri);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim());
    }
    builder.body(Body::from(body.to_vec())).ok()
}

/// Whether the request is a polling GET on the live session (a long-poll).
fn long_polls(req: &Request<Body>, sid: &str) -> bool {
    if req.method() != Method::GET {
        return false;
    }
    let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(req.uri()) else {
        return false;
    };
    q.get("sid").map(String::as_str) == Some(sid)
        && q.get("transport").map(String::as_str) == Some("polling")
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.runtime.block_on(async {
        let sid = open(&h.router).await;
        let mut opened = vec![sid.clone()];
        for raw in data.split(|&b| b == 0).take(MAX_REQUESTS) {
            let Some(req) = parse(raw, &sid) else {
                continue;
            };
            if long_polls(&req, &sid) {
                continue;
            }
            let (status, body) = send(&h.router, req).await;
            assert!(
                matches!(
                    status,
                    StatusCode::OK
                        | StatusCode::NO_CONTENT
                        | StatusCode::BAD_REQUEST
                        | StatusCode::FORBIDDEN
                        | StatusCode::NOT_FOUND
                        | StatusCode::METHOD_NOT_ALLOWED
                        | StatusCode::PAYLOAD_TOO_LARGE
                        | StatusCode::SWITCHING_PROTOCOLS
                ),
                "unexpected status {status}"
            );
            if let Some(new) = open_sid(&body) {
                opened.push(new);
            }
        }
        for sid in &opened {
            close(&h.router, sid).await;
        }
        // Requests on the in-memory bus finish without ever waiting, so the
        // tasks they spawned (heartbeats, socket removal) have not run yet: let
        // them finish, or they would pile up from one input to the next.
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    });
});
