//! The Engine.IO v4 and Socket.IO v5 wire codec, with no I/O.
//!
//! roomcast speaks the protocol of the official `socket.io-client` unchanged. This
//! crate turns bytes into packets and packets into bytes; it knows nothing of
//! sockets, tasks or transports, so it can be unit-tested against the byte strings
//! of the protocol specifications and fuzzed on its own.
//!
//! Layout:
//! - [`engineio`]: the transport-level packets (open, close, ping, pong, message,
//!   upgrade, noop), the WebSocket framing (one packet per frame, binary frames are
//!   raw) and the long-polling payload (`\x1e`-separated, binary as `b` + base64).
//! - [`socketio`]: the application-level packets carried inside Engine.IO messages
//!   (`<type>[<attachments>-][<nsp>,][<ackId>][JSON]`), the decoder validation the
//!   protocol requires, binary attachment assembly, and encoders that build a
//!   complete Engine.IO message (`4…`) once so it can be shared by every recipient.
//!
//! Everything that decodes untrusted input returns a [`socketio::DecodeError`] or
//! [`engineio::DecodeError`]; nothing here panics on any input.

#![forbid(unsafe_code)]

pub mod engineio;
pub mod socketio;
