//! HTTP routing for the Engine.IO endpoint: query checks, CORS and Origin,
//! and the hand-off to the polling or WebSocket transport.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::Response;
use axum::routing::any;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::http_reply::{response, EioError};
use crate::session::Handshake;
use crate::sink::TransportKind;
use crate::tcp::ClientConn;
use crate::Edge;

pub(crate) fn router(edge: Edge) -> axum::Router {
    let path = edge.config().path.clone();
    let mut router = axum::Router::new().route(&path, any(handle));
    let bare = path.trim_end_matches('/');
    if !bare.is_empty() && bare != path {
        router = router.route(bare, any(handle));
    }
    if let Some(echo) = edge.config().ws_echo_path.clone() {
        router = router.route(&echo, any(echo_handle));
    }
    router.with_state(edge)
}

/// The echo endpoint: a plain WebSocket, no Engine.IO.
async fn echo_handle(State(edge): State<Edge>, mut req: Request) -> Response {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return EioError::BadRequest.response();
    }
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((res, fut)) => {
            edge.clone().spawn(crate::ws::echo(edge, fut));
            res.map(Body::new)
        }
        Err(_) => EioError::BadRequest.response(),
    }
}

/// The `Origin` of a browser request, if it is allowed; `Err` if it is not.
fn allowed_origin(edge: &Edge, headers: &HeaderMap) -> Result<Option<HeaderValue>, ()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let allowed = &edge.config().cors_origins;
    let ok = allowed.is_empty()
        || origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a == o || a == "*"));
    if ok {
        Ok(Some(origin.clone()))
    } else {
        Err(())
    }
}

fn with_cors(mut res: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    res
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// What a request that opens a session tells about the client.
fn handshake<'a>(
    req: &Request,
    query: impl Iterator<Item = (&'a String, &'a String)>,
) -> Handshake {
    const ENGINE_PARAMS: [&str; 4] = ["EIO", "transport", "sid", "t"];
    Handshake {
        bearer: bearer(req.headers()),
        remote: req
            .extensions()
            .get::<ConnectInfo<ClientConn>>()
            .map(|c| c.0.peer),
        query: query
            .filter(|(k, _)| !ENGINE_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        headers: req
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect(),
        slot: None,
    }
}

/// Refuses a request head over the configured header count or size (431).
/// Whether the request's `Sec-WebSocket-Key` is what RFC 6455 4.1 asks of a
/// client: one header, the base64 of 16 bytes.
fn valid_ws_key(headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return false;
    };
    // 16 bytes are 24 characters of base64, padding included.
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .is_ok_and(|bytes| bytes.len() == 16)
}

fn check_head(edge: &Edge, req: &Request) -> Result<(), crate::limits::Limit> {
    use crate::limits::Limit;
    let cfg = edge.config();
    let headers = req.headers();
    if headers.len() > cfg.max_request_headers {
        return Err(Limit::HeaderCount);
    }
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let bytes = headers
        .iter()
        .fold(target, |n, (k, v)| n + k.as_str().len() + v.len());
    if bytes > cfg.max_request_head_bytes {
        return Err(Limit::HeaderBytes);
    }
    Ok(())
}

fn too_many_requests(message: &'static str) -> Response {
    let mut res = response(
        StatusCode::TOO_MANY_REQUESTS,
        "text/plain; charset=UTF-8",
        Body::from(message),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

async fn handle(State(edge): State<Edge>, req: Request) -> Response {
    if let Err(limit) = check_head(&edge, &req) {
        limit.hit();
        tracing::debug!(limit = limit.label(), "request head refused");
        return response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "text/plain; charset=UTF-8",
            Body::from("request header fields too large"),
        );
    }
    let origin = match allowed_origin(&edge, req.headers()) {
        Ok(origin) => origin,
        Err(()) => return EioError::Forbidden.response(),
    };
    if req.method() == Method::OPTIONS {
        let mut res = response(StatusCode::NO_CONTENT, "text/plain", Body::empty());
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        if let Some(requested) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        return with_cors(res, origin);
    }
    let res = route(&edge, req).await;
    with_cors(res, origin)
}

async fn route(edge: &Edge, mut req: Request) -> Response {
    let query = match Query::<HashMap<String, String>>::try_from_uri(req.uri()) {
        Ok(Query(q)) => q,
        Err(_) => return EioError::BadRequest.response(),
    };
    if query.get("EIO").map(String::as_str) != Some("4") {
        return EioError::UnsupportedProtocolVersion.response();
    }
    let sid = query.get("sid").cloned();
    // Only a request that opens a session keeps its handshake data.
    let hs = if sid.is_none() {
        let mut hs = handshake(&req, query.iter());
        if let Some(peer) = hs.remote {
            // Before any session exists or the upgrade is answered.
            match edge.peers().admit(peer.ip()) {
                Ok(slot) => hs.slot = slot,
                Err(refusal) => {
                    refusal.limit().hit();
                    tracing::debug!(peer = %peer.ip(), limit = refusal.limit().label(), "connection refused");
                    return too_many_requests(refusal.message());
                }
            }
        }
        hs
    } else {
        Handshake::default()
    };
    match query.get("transport").map(String::as_str) {
        Some("websocket") => {
            if !fastwebsockets::upgrade::is_upgrade_request(&req) || !valid_ws_key(req.headers()) {
                return EioError::BadRequest.response();
            }
            let existing = match &sid {
                None => None,
                Some(sid) => match edge.find_session(sid) {
                    // A closed session is found only to answer its last GET.
                    Some(s) if s.is_closed() => return EioError::UnknownSid.response(),
                    Some(s) => Some(s),
                    None => match crate::forward::foreign_tag(edge, sid) {
                        Some(tag) => return relay_upgrade(edge, req, tag, sid).await,
                        None => return EioError::UnknownSid.response(),
                    },
                },
            };
            // A session already on a WebSocket, or being upgraded by another
            // one: like the reference server, accept this WebSocket and close
            // it at once; the session goes on where it is.
            let refused = existing.as_deref().and_then(crate::ws::UpgradeRefusal::of);
            match (fastwebsockets::upgrade::upgrade(&mut req), refused) {
                (Ok((res, fut)), Some(refusal)) => {
                    edge.spawn(crate::ws::refuse(fut, refusal));
                    res.map(Body::new)
                }
                (Ok((res, fut)), None) => {
                    let tcp = req
                        .extensions()
                        .get::<ConnectInfo<ClientConn>>()
                        .and_then(|c| c.0.tcp.clone());
                    edge.spawn(crate::ws::serve(edge.clone(), fut, existing, hs, tcp));
                    res.map(Body::new)
                }
                (Err(_), _) => EioError::BadRequest.response(),
            }
        }
        Some("polling") => match sid {
            None if req.method() == Method::GET => {
                let session = edge.open_session(TransportKind::Polling, hs);
                crate::polling::get(edge, &session).await.into_response()
            }
            None => EioError::BadHandshakeMethod.response(),
            Some(sid) => {
                let Some(session) = edge.find_session(&sid) else {
                    // Another edge's session: served there.
                    let Some(tag) = crate::forward::foreign_tag(edge, &sid) else {
                        return EioError::UnknownSid.response();
                    };
                    let method = req.method().clone();
                    return crate::forward::poll(edge, tag, &sid, &method, req.into_body())
                        .await
                        .into_response();
                };
                // A request after the pong deadline finds the session closed,
                // as it would have been on time.
                if !session.is_closed() && edge.check_heartbeat_now(&session).is_err() {
                    return EioError::UnknownSid.response();
                }
                let reply = match *req.method() {
                    Method::GET => crate::polling::get(edge, &session).await,
                    Method::POST => crate::polling::post(edge, &session, req.into_body()).await,
                    _ => EioError::BadRequest.reply(),
                };
                reply.into_response()
            }
        },
        _ => EioError::UnknownTransport.response(),
    }
}

/// A WebSocket for a session another edge holds: accepted here if the
/// owner lets it upgrade, and relayed to it (ADR 20).
async fn relay_upgrade(edge: &Edge, mut req: Request, tag: &str, sid: &str) -> Response {
    let refused = match crate::forward::check_upgrade(edge, tag, sid).await {
        Ok(refused) => refused.err(),
        Err(reply) => return reply.into_response(),
    };
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((res, fut)) => {
            match refused {
                Some(refusal) => edge.spawn(crate::ws::refuse(fut, refusal)),
                None => edge.spawn(crate::forward::relay(
                    edge.clone(),
                    fut,
                    tag.to_owned(),
                    sid.to_owned(),
                )),
            }
            res.map(Body::new)
        }
        Err(_) => EioError::BadRequest.response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_keys(keys: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for k in keys {
            h.append(
                header::SEC_WEBSOCKET_KEY,
                HeaderValue::from_str(k).expect("header value"),
            );
        }
        h
    }

    #[test]
    fn a_websocket_key_is_the_base64_of_16_bytes() {
        assert!(valid_ws_key(&with_keys(&["dGhlIHNhbXBsZSBub25jZQ=="])));
        for bad in [
            "",
            "x",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ==AA",
            "dGhlIHNhbXBsZSBub25jZ!==",
            // 17 bytes.
            "dGhlIHNhbXBsZSBub25jZSE=",
        ] {
            assert!(!valid_ws_key(&with_keys(&[bad])), "{bad:?}");
        }
        assert!(!valid_ws_key(&with_keys(&["A".repeat(10_240).as_str()])));
        assert!(!valid_ws_key(&HeaderMap::new()));
        assert!(!valid_ws_key(&with_keys(&[
            "dGhlIHNhbXBsZSBub25jZQ==",
            "dGhlIHNhbXBsZSBub25jZQ=="
        ])));
    }
}
