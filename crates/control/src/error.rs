//! Domain errors of the control API and their one mapping to gRPC status codes.

use roomcast_bus::BusError;
use roomcast_wire::socketio::ArgsError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid namespace {0:?}: it must start with '/' and be at most 256 bytes")]
    InvalidNamespace(String),
    #[error("invalid room name {0:?}: room names are 1 to 256 bytes")]
    InvalidRoom(String),
    #[error("invalid socket id {0:?}")]
    InvalidSocketId(String),
    #[error("invalid user id {0:?}: user ids are 1 to 256 bytes")]
    InvalidUserId(String),
    #[error("{0}")]
    InvalidArgs(#[from] ArgsError),
    #[error("{0} attachments exceed the limit of {1}")]
    TooManyAttachments(usize, usize),
    #[error("packet of {0} bytes exceeds the max payload of {1} bytes")]
    PayloadTooLarge(usize, usize),
    #[error("no rooms given")]
    NoRooms,
    #[error("{what} has {len} entries, more than the limit of {limit} (--max-selector-size)")]
    SelectorTooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("invalid reply_to: copy it unchanged from the client event")]
    InvalidReplyTo,
    #[error("ack_id must be set: only events that carry an ack id can be answered")]
    MissingAckId,
    #[error(
        "only {got} of {expected} edge answers came within {timeout_ms} ms (silent: {silent})"
    )]
    NotConfirmed {
        got: usize,
        expected: usize,
        timeout_ms: u128,
        /// The node ids of the edges that did not answer, sorted.
        silent: String,
    },
    #[error("timeout_ms must be at most {0}")]
    InvalidTimeout(u128),
    #[error(
        "{refused} of the selected sockets would exceed the rooms-per-socket limit and did not join ({joined} did)"
    )]
    TooManyRooms { refused: u64, joined: u64 },
    #[error("presence is off on this server")]
    PresenceOff,
    #[error("ttl_ms must be 1 to {0} with at_least_once")]
    InvalidTtl(u128),
    #[error("ttl_ms needs at_least_once")]
    TtlWithoutAck,
    #[error("at_least_once emits go through Emit, which returns their message id")]
    AckedInStream,
    #[error("{0}")]
    AckedTarget(&'static str),
    #[error(
        "unknown message id {0:?} (never accepted, or finished longer ago than the retention)"
    )]
    UnknownMessage(String),
    #[error("the inbox is full ({0} messages waiting)")]
    InboxFull(usize),
    #[error("at-least-once delivery is off on this server (it needs presence)")]
    DeliveryOff,
    #[error("{0}")]
    Presence(#[from] roomcast_bus::KvError),
    #[error("bus unavailable: {0}")]
    Bus(#[from] BusError),
    #[error("{0}")]
    Recovery(#[from] roomcast_bus::recovery::RecoveryError),
}

impl From<ControlError> for tonic::Status {
    fn from(e: ControlError) -> Self {
        let msg = e.to_string();
        match e {
            ControlError::InvalidNamespace(_)
            | ControlError::InvalidRoom(_)
            | ControlError::InvalidSocketId(_)
            | ControlError::InvalidUserId(_)
            | ControlError::InvalidArgs(_)
            | ControlError::TooManyAttachments(..)
            | ControlError::PayloadTooLarge(..)
            | ControlError::NoRooms
            | ControlError::SelectorTooLarge { .. }
            | ControlError::InvalidReplyTo
            | ControlError::MissingAckId
            | ControlError::InvalidTimeout(_)
            | ControlError::InvalidTtl(_)
            | ControlError::TtlWithoutAck
            | ControlError::AckedInStream
            | ControlError::AckedTarget(_) => tonic::Status::invalid_argument(msg),
            ControlError::UnknownMessage(_) => tonic::Status::not_found(msg),
            ControlError::InboxFull(_) => tonic::Status::resource_exhausted(msg),
            ControlError::DeliveryOff => tonic::Status::failed_precondition(msg),
            ControlError::NotConfirmed { .. } => tonic::Status::deadline_exceeded(msg),
            ControlError::PresenceOff | ControlError::TooManyRooms { .. } => {
                tonic::Status::failed_precondition(msg)
            }
            ControlError::Presence(_) => tonic::Status::unavailable(msg),
            ControlError::Bus(BusError::InvalidSubject(_)) => tonic::Status::internal(msg),
            ControlError::Bus(BusError::Timeout(_)) => tonic::Status::deadline_exceeded(msg),
            ControlError::Bus(_) | ControlError::Recovery(_) => tonic::Status::unavailable(msg),
        }
    }
}
