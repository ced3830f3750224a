//! Engine.IO's HTTP answers, shared by the routing (`http`) and the
//! long-polling transport (`polling`): the error codes the reference server
//! sends, and a response with its content type.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::StatusCode;

/// Engine.IO's HTTP error codes, as the reference server numbers them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EioError {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedProtocolVersion = 5,
}

impl EioError {
    fn message(self) -> &'static str {
        match self {
            EioError::UnknownTransport => "Transport unknown",
            EioError::UnknownSid => "Session ID unknown",
            EioError::BadHandshakeMethod => "Bad handshake method",
            EioError::BadRequest => "Bad request",
            EioError::Forbidden => "Forbidden",
            EioError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    pub(crate) fn response(self) -> Response {
        self.reply().into_response()
    }

    pub(crate) fn reply(self) -> PollReply {
        let status = match self {
            EioError::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = format!(
            "{{\"code\":{},\"message\":\"{}\"}}",
            self as u8,
            self.message()
        );
        PollReply {
            status,
            content_type: ContentType::Json,
            body: Bytes::from(body),
            close: false,
        }
    }
}

/// The content types of Engine.IO's HTTP answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentType {
    Text,
    Html,
    Json,
}

impl ContentType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ContentType::Text => "text/plain; charset=UTF-8",
            ContentType::Html => "text/html",
            ContentType::Json => "application/json",
        }
    }

    /// The one-letter name `forward` carries between edges.
    pub(crate) fn code(self) -> &'static str {
        match self {
            ContentType::Text => "t",
            ContentType::Html => "h",
            ContentType::Json => "j",
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<ContentType> {
        match code {
            "t" => Some(ContentType::Text),
            "h" => Some(ContentType::Html),
            "j" => Some(ContentType::Json),
            _ => None,
        }
    }
}

/// A long-polling answer, before it is an HTTP response: the owning edge
/// may send it to the edge the request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PollReply {
    pub status: StatusCode,
    pub content_type: ContentType,
    pub body: Bytes,
    /// The connection closes after it (the rest of a request body is not read).
    pub close: bool,
}

impl PollReply {
    pub(crate) fn text(status: StatusCode, body: Bytes) -> PollReply {
        PollReply {
            status,
            content_type: ContentType::Text,
            body,
            close: false,
        }
    }

    /// A POST taken.
    pub(crate) fn ok() -> PollReply {
        PollReply {
            status: StatusCode::OK,
            content_type: ContentType::Html,
            body: Bytes::from_static(b"ok"),
            close: false,
        }
    }

    /// This answer, after which the connection is closed.
    pub(crate) fn closing(mut self) -> PollReply {
        self.close = true;
        self
    }

    pub(crate) fn into_response(self) -> Response {
        let mut res = response(
            self.status,
            self.content_type.as_str(),
            Body::from(self.body),
        );
        if self.close {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

pub(crate) fn response(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}
