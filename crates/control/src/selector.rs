//! Names and selectors a backend sends, checked once for every call: what
//! is a valid namespace, room, socket or user id, and how many of them one
//! request may name.

use std::collections::HashSet;

use roomcast_api::v1::Selector;
use roomcast_bus::envelope::Target;
use roomcast_bus::names::{looks_like_socket_id, valid_namespace, valid_room, MAX_NAME_LEN};

use crate::ControlError;

/// The bounds of one request, from [`crate::ControlConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest encoded packet (text and attachments).
    pub max_payload: usize,
    pub max_attachments: usize,
    /// Most entries in each list of a selector.
    pub max_selector_size: usize,
}

impl Limits {
    /// Bounds one list of a request: what a call costs grows with it.
    pub fn check_list(&self, what: &'static str, len: usize) -> Result<(), ControlError> {
        let limit = self.max_selector_size;
        if len > limit {
            return Err(ControlError::SelectorTooLarge { what, len, limit });
        }
        Ok(())
    }

    /// Validates a selector. Rooms that have the form of a socket id are also
    /// addressed as sockets: every socket is in the room of its own id, and
    /// that room is never a subject of its own.
    pub fn target(&self, sel: Option<Selector>) -> Result<Target, ControlError> {
        let sel = sel.unwrap_or_default();
        for (what, len) in [
            ("rooms", sel.rooms.len()),
            ("socket_ids", sel.socket_ids.len()),
            ("user_ids", sel.user_ids.len()),
            ("except_rooms", sel.except_rooms.len()),
            ("except_socket_ids", sel.except_socket_ids.len()),
        ] {
            self.check_list(what, len)?;
        }
        let in_rooms = rooms(&sel.rooms)?;
        let mut sockets = socket_ids(&sel.socket_ids)?;
        sockets.extend(in_rooms.iter().filter(|r| looks_like_socket_id(r)).cloned());
        let mut seen = HashSet::new();
        sockets.retain(|s| seen.insert(s.clone()));
        Ok(Target {
            ns: namespace(&sel.namespace)?,
            rooms: in_rooms,
            sockets,
            users: user_ids(&sel.user_ids)?,
            except_rooms: rooms(&sel.except_rooms)?,
            except_sockets: socket_ids(&sel.except_socket_ids)?,
        })
    }
}

/// A namespace; empty means `/`.
pub(crate) fn namespace(ns: &str) -> Result<String, ControlError> {
    let ns = if ns.is_empty() { "/" } else { ns };
    if !valid_namespace(ns) {
        return Err(ControlError::InvalidNamespace(ns.to_owned()));
    }
    Ok(ns.to_owned())
}

/// Room names, each once, in the order given.
pub(crate) fn rooms(names: &[String]) -> Result<Vec<String>, ControlError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for r in names {
        if !valid_room(r) {
            return Err(ControlError::InvalidRoom(r.clone()));
        }
        if seen.insert(r) {
            out.push(r.clone());
        }
    }
    Ok(out)
}

/// Socket ids, as given.
pub(crate) fn socket_ids(ids: &[String]) -> Result<Vec<String>, ControlError> {
    for id in ids {
        if id.is_empty() || id.len() > MAX_NAME_LEN {
            return Err(ControlError::InvalidSocketId(id.clone()));
        }
    }
    Ok(ids.to_vec())
}

/// User ids, each once, in the order given.
pub(crate) fn user_ids(ids: &[String]) -> Result<Vec<String>, ControlError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if id.is_empty() || id.len() > MAX_NAME_LEN {
            return Err(ControlError::InvalidUserId(id.clone()));
        }
        if seen.insert(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_selector_size: usize) -> Limits {
        Limits {
            max_payload: 1000,
            max_attachments: 1,
            max_selector_size,
        }
    }

    #[test]
    fn a_selector_is_bounded_deduplicated_and_socket_rooms_are_sockets() {
        let sid = roomcast_bus::names::new_id();
        let t = limits(10)
            .target(Some(Selector {
                rooms: vec!["a".into(), "a".into(), sid.clone()],
                user_ids: vec!["u".into(), "u".into()],
                ..Selector::default()
            }))
            .expect("valid");
        assert_eq!(t.ns, "/");
        assert_eq!(t.rooms, vec!["a".to_owned(), sid.clone()]);
        assert_eq!(t.sockets, vec![sid]);
        assert_eq!(t.users, vec!["u".to_owned()]);

        let err = limits(1)
            .target(Some(Selector {
                except_rooms: vec!["a".into(), "b".into()],
                ..Selector::default()
            }))
            .expect_err("two entries over a limit of one");
        assert!(matches!(
            err,
            ControlError::SelectorTooLarge {
                what: "except_rooms",
                len: 2,
                limit: 1
            }
        ));
    }

    #[test]
    fn invalid_names_are_refused() {
        let l = limits(10);
        let bad = |sel: Selector| l.target(Some(sel)).expect_err("invalid");
        assert!(matches!(
            bad(Selector {
                namespace: "chat".into(),
                ..Selector::default()
            }),
            ControlError::InvalidNamespace(_)
        ));
        assert!(matches!(
            bad(Selector {
                rooms: vec![String::new()],
                ..Selector::default()
            }),
            ControlError::InvalidRoom(_)
        ));
        assert!(matches!(
            bad(Selector {
                socket_ids: vec!["x".repeat(MAX_NAME_LEN + 1)],
                ..Selector::default()
            }),
            ControlError::InvalidSocketId(_)
        ));
        assert!(matches!(
            bad(Selector {
                user_ids: vec![String::new()],
                ..Selector::default()
            }),
            ControlError::InvalidUserId(_)
        ));
    }
}
