//! The connect hook: a backend's `roomcast.v1.ConnectHook` service decides
//! whether a CONNECT may proceed, for apps that do not use JWTs.
//!
//! The channel connects lazily and reconnects by itself; each call has a
//! deadline, so a slow or absent backend refuses the CONNECT instead of
//! leaving the client waiting.

use std::time::Duration;

use roomcast_api::v1::connect_hook_client::ConnectHookClient;
use roomcast_api::v1::AuthorizeRequest;
use tonic::transport::{Channel, Endpoint};

use crate::auth::Identity;

/// Largest `data_json` a hook may attach to a socket.
pub const MAX_DATA_BYTES: usize = 16 * 1024;

/// Where the hook is and how long it may take.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// `http://host:port` of the backend's gRPC server.
    pub url: String,
    pub timeout: Duration,
}

#[derive(Clone)]
pub(crate) struct Hook {
    client: ConnectHookClient<Channel>,
    timeout: Duration,
}

/// What the hook granted.
pub(crate) struct Granted {
    pub identity: Identity,
    pub data_json: String,
}

/// Why a CONNECT was not let through; the text is what the client sees.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("{0}")]
    Denied(String),
    #[error("connect hook timed out")]
    Timeout,
    #[error("connect hook unavailable")]
    Unavailable(#[source] tonic::Status),
    #[error("connect hook answered with invalid {0}")]
    Invalid(&'static str),
}

impl Refused {
    /// The metrics label of this cause.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::Denied(_) => "hook_denied",
            Refused::Timeout => "hook_timeout",
            Refused::Unavailable(_) => "hook_unavailable",
            Refused::Invalid(_) => "hook_invalid_answer",
        }
    }
}

impl Hook {
    pub fn new(cfg: &HookConfig) -> Result<Hook, tonic::transport::Error> {
        let channel = Endpoint::from_shared(cfg.url.clone())?
            .connect_timeout(cfg.timeout)
            .connect_lazy();
        Ok(Hook {
            client: ConnectHookClient::new(channel),
            timeout: cfg.timeout,
        })
    }

    pub async fn authorize(&self, req: AuthorizeRequest) -> Result<Granted, Refused> {
        // One deadline, ours: a second one inside tonic would race it and
        // report the same expiry as a cancellation.
        let mut client = self.client.clone();
        let call = client.authorize(tonic::Request::new(req));
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => return Err(Refused::Timeout),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                return Err(Refused::Timeout)
            }
            Ok(Err(status)) => return Err(Refused::Unavailable(status)),
            Ok(Ok(res)) => res.into_inner(),
        };
        if !answer.allow {
            let message = if answer.message.is_empty() {
                "not authorized".to_owned()
            } else {
                answer.message
            };
            return Err(Refused::Denied(message));
        }
        if answer.user_id.len() > roomcast_bus::names::MAX_NAME_LEN {
            return Err(Refused::Invalid("user_id"));
        }
        if !answer
            .rooms
            .iter()
            .all(|r| roomcast_bus::names::valid_room(r))
        {
            return Err(Refused::Invalid("rooms"));
        }
        if answer.data_json.len() > MAX_DATA_BYTES
            || (!answer.data_json.is_empty()
                && serde_json::from_str::<serde::de::IgnoredAny>(&answer.data_json).is_err())
        {
            return Err(Refused::Invalid("data_json"));
        }
        Ok(Granted {
            identity: Identity {
                user_id: answer.user_id,
                rooms: answer.rooms,
                expires_at: None,
            },
            data_json: answer.data_json,
        })
    }
}
