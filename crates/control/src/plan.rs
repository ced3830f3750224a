//! The emit plan: one emit request checked and encoded once, shared by
//! `Emit`, `EmitStream`, `EmitWithAck` and at-least-once delivery.
//!
//! Checks run in one order whatever the path: the event name, the arguments
//! (a JSON array no deeper than the wire codec allows), the number of
//! attachments and their placeholders, then, once encoded, the packet size.
//! The selector is checked before ([`crate::selector::Limits::target`]),
//! since some paths refuse some selectors first.

use bytes::Bytes;
use roomcast_bus::envelope::{Packet, Target};
use roomcast_wire::socketio;
use serde_json::value::RawValue;

use crate::selector::Limits;
use crate::ControlError;

/// An emit whose event, arguments and attachments passed the checks; the
/// arguments are parsed (not their contents), ready to encode.
#[derive(Debug)]
pub(crate) struct EmitPlan<'a> {
    pub target: Target,
    event: &'a str,
    args: Vec<&'a RawValue>,
    attachments: Vec<Bytes>,
    max_payload: usize,
}

/// An emit plan encoded: where it goes and the packet, built once.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub target: Target,
    pub packet: Packet,
}

impl<'a> EmitPlan<'a> {
    /// Checks an emit of `event` with `args_json` and `attachments` to `target`.
    pub fn new(
        limits: &Limits,
        target: Target,
        event: &'a str,
        args_json: &'a str,
        attachments: Vec<Vec<u8>>,
    ) -> Result<EmitPlan<'a>, ControlError> {
        socketio::check_event_name(event)?;
        let args = socketio::parse_args(args_json)?;
        if attachments.len() > limits.max_attachments {
            return Err(ControlError::TooManyAttachments(
                attachments.len(),
                limits.max_attachments,
            ));
        }
        socketio::check_args_attachments(args_json, attachments.len())?;
        Ok(EmitPlan {
            target,
            event,
            args,
            attachments: attachments.into_iter().map(Bytes::from).collect(),
            max_payload: limits.max_payload,
        })
    }

    /// Appends one argument after the caller's (at-least-once emits carry
    /// their message id so).
    pub fn with_last_arg(mut self, arg: &'a RawValue) -> EmitPlan<'a> {
        self.args.push(arg);
        self
    }

    /// The attachments, as the packet will carry them.
    pub fn attachments(&self) -> &[Bytes] {
        &self.attachments
    }

    /// Encodes the event packet, with an ack id when one is asked for, and
    /// checks its size.
    pub fn encode(self, ack_id: Option<u64>) -> Result<Encoded, ControlError> {
        let text = socketio::encode_event(
            &self.target.ns,
            self.event,
            &self.args,
            ack_id,
            self.attachments.len(),
        );
        check_size(self.max_payload, &text, &self.attachments)?;
        Ok(Encoded {
            target: self.target,
            packet: Packet {
                text,
                attachments: self.attachments,
            },
        })
    }
}

/// Fails when a packet (text and attachments) is larger than `max_payload`.
pub(crate) fn check_size(
    max_payload: usize,
    text: &Bytes,
    attachments: &[Bytes],
) -> Result<(), ControlError> {
    let size = text.len() + attachments.iter().map(Bytes::len).sum::<usize>();
    if size > max_payload {
        return Err(ControlError::PayloadTooLarge(size, max_payload));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_wire::socketio::ArgsError;

    fn limits() -> Limits {
        Limits {
            max_payload: 64,
            max_attachments: 2,
            max_selector_size: 10,
        }
    }

    fn plan<'a>(
        event: &'a str,
        args: &'a str,
        attachments: Vec<Vec<u8>>,
    ) -> Result<EmitPlan<'a>, ControlError> {
        let target = Target {
            ns: "/".into(),
            ..Target::default()
        };
        EmitPlan::new(&limits(), target, event, args, attachments)
    }

    #[test]
    fn an_emit_is_encoded_once_with_its_ack_id_and_last_argument() {
        let id = RawValue::from_string(r#"{"messageId":"m1"}"#.into()).expect("json");
        let encoded = plan("note", "[1]", Vec::new())
            .expect("valid")
            .with_last_arg(&id)
            .encode(Some(7))
            .expect("fits");
        assert_eq!(
            &encoded.packet.text[..],
            br#"427["note",1,{"messageId":"m1"}]"#
        );
        let binary = plan(
            "b",
            r#"[{"_placeholder":true,"num":0}]"#,
            vec![b"xy".to_vec()],
        )
        .expect("valid")
        .encode(None)
        .expect("fits");
        assert_eq!(
            &binary.packet.text[..],
            br#"451-["b",{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(binary.packet.attachments, vec![Bytes::from_static(b"xy")]);
    }

    #[test]
    fn each_check_has_its_error() {
        let err = |r: Result<EmitPlan<'_>, ControlError>| r.expect_err("refused");
        assert!(matches!(
            err(plan("", "[]", Vec::new())),
            ControlError::InvalidArgs(ArgsError::EmptyEvent)
        ));
        assert!(matches!(
            err(plan("connect", "[]", Vec::new())),
            ControlError::InvalidArgs(ArgsError::ReservedEvent(_))
        ));
        assert!(matches!(
            err(plan("e", "{}", Vec::new())),
            ControlError::InvalidArgs(ArgsError::NotAnArray(_))
        ));
        let deep = format!("[{}{}]", "[".repeat(200), "]".repeat(200));
        assert!(matches!(
            err(plan("e", &deep, Vec::new())),
            ControlError::InvalidArgs(ArgsError::TooDeep)
        ));
        assert!(matches!(
            err(plan("e", "[]", vec![Vec::new(); 3])),
            ControlError::TooManyAttachments(3, 2)
        ));
        assert!(matches!(
            err(plan("e", "[1]", vec![b"x".to_vec()])),
            ControlError::InvalidArgs(ArgsError::Placeholders { attachments: 1, .. })
        ));
        let big = format!("[\"{}\"]", "x".repeat(64));
        let too_big = plan("e", &big, Vec::new())
            .expect("valid")
            .encode(None)
            .expect_err("over the max payload");
        assert!(matches!(too_big, ControlError::PayloadTooLarge(_, 64)));
        let with_attachment = plan("e", r#"[{"_placeholder":true,"num":0}]"#, vec![vec![0; 40]])
            .expect("valid")
            .encode(None)
            .expect_err("attachments count toward the size");
        assert!(matches!(
            with_attachment,
            ControlError::PayloadTooLarge(_, 64)
        ));
    }
}
