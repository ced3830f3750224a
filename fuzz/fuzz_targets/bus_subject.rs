//! Room, namespace and node names mapped to NATS subject tokens, and subjects
//! read back.
//!
//! Properties: `untoken(token(s)) == s` for every string; `token` yields a valid
//! NATS token without wildcards; `untoken` never panics on any string and
//! accepts only canonical tokens (`token(untoken(t)) == t`, so the mapping is
//! injective); room and ack-reply subjects parse back to what built them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_bus::subject::{self, token, untoken, Subjects};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    let t = token(s);
    assert!(
        subject::is_valid(&t, false),
        "token {t:?} is not a valid subject"
    );
    assert!(!subject::has_wildcard(&t));
    assert_eq!(untoken(&t).as_deref(), Some(s), "token does not round-trip");

    if let Some(name) = untoken(s) {
        assert_eq!(token(&name), s, "untoken accepted a non-canonical token");
    }

    // Two names from one input: a namespace and a room.
    let (ns, room) = s.split_once('\u{0}').unwrap_or((s, ""));
    let subjects = Subjects::new("fuzz");
    let room_subject = subjects.room(ns, room);
    assert!(subject::is_valid(&room_subject, false));
    assert!(subject::matches("rc.fuzz.room.*.*", &room_subject));
    assert_eq!(
        subjects.parse_room(&room_subject),
        Some((ns.to_owned(), room.to_owned()))
    );
    let reply = subjects.ack_reply(ns, room, 42);
    assert!(subject::matches(&subjects.ack_replies(ns), &reply));
    assert_eq!(
        subjects.parse_ack_reply(ns, &reply),
        Some((room.to_owned(), 42))
    );
    assert!(subjects.is_node(&subjects.node(ns)));

    // Arbitrary subjects and patterns.
    let _ = subjects.parse_room(s);
    let _ = subjects.parse_ack_reply("node", s);
    let _ = subjects.is_node(s);
    let _ = subject::is_valid(s, true);
    let _ = subject::matches(s, ns);
    let _ = subject::matches(ns, room);
});
