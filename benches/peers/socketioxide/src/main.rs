//! socketioxide peer for the load comparison (benches/run).
//!
//! Sockets join the rooms listed in the CONNECT auth object (`{"rooms": [...]}`)
//! or in the `rooms` query parameter (comma separated). `POST /emit` with
//! `{"room": "...", "event": "...", "data": ...}` broadcasts to a room. Prints
//! `peer listening http=HOST:PORT` when ready. `HOST`/`PORT` from the environment.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::SocketIo;

#[derive(Deserialize)]
struct Emit {
    room: String,
    event: String,
    #[serde(default)]
    data: Value,
}

fn rooms_of(socket: &SocketRef, auth: Option<Value>) -> Vec<String> {
    if let Some(Value::Array(rooms)) = auth.as_ref().and_then(|a| a.get("rooms")).cloned() {
        return rooms
            .into_iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
    }
    let query = socket.req_parts().uri.query().unwrap_or_default();
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("rooms="))
        .flat_map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|r| !r.is_empty())
        .collect()
}

async fn emit(State(io): State<SocketIo>, Json(body): Json<Emit>) -> StatusCode {
    match io.to(body.room).emit(body.event, &body.data).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (layer, io) = SocketIo::new_layer();
    io.ns(
        "/",
        async |socket: SocketRef, TryData(auth): TryData<Value>| {
            let rooms = rooms_of(&socket, auth.ok());
            if !rooms.is_empty() {
                socket.join(rooms);
            }
        },
    );
    let app = Router::new()
        .route("/emit", post(emit))
        .with_state(io)
        .layer(layer);
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
    println!("peer listening http={}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
