//! Engine.IO's HTTP answers, shared by the routing (`http`) and the
//! long-polling transport (`polling`): the error codes the reference server
//! sends, and a response with its content type.

use axum::body::Body;
use axum::response::Response;
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
        let status = match self {
            EioError::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = format!(
            "{{\"code\":{},\"message\":\"{}\"}}",
            self as u8,
            self.message()
        );
        response(status, "application/json", Body::from(body))
    }
}

pub(crate) fn response(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}
