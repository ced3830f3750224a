//! Subjects, and the escaping that maps any room or namespace name into a token.
//!
//! | subject | carries |
//! |---|---|
//! | `rc.<cluster>.room.<ns>.<room>` | commands for the members of a room |
//! | `rc.<cluster>.ns.<ns>` | commands for every socket of a namespace |
//! | `rc.<cluster>.edges` | commands for every edge (broadcast routing, room selectors) |
//! | `rc.<cluster>.sock.<tag>` | commands for the sockets whose id starts with the route tag |
//! | `rc.<cluster>.node.<node>` | commands for one edge (ack replies) |
//! | `rc.<cluster>.poll.<tag>` | polling requests and relayed WebSockets for the sessions of the edge with the route tag |
//! | `rc.<cluster>.hb` | edges' heartbeats and goodbyes |
//! | `rc.<cluster>.in.<ns>.<event>` | client events, for backends |
//! | `rc.<cluster>.ack.<node>.<socket>.<ack id>` | NATS replies to client events (acks) |
//!
//! A token keeps `[A-Za-z0-9_-]` as it is and writes every other byte as `~XX`
//! (two upper-case hex digits), so it never holds `.`, `*`, `>`, whitespace or
//! non-ASCII, and the mapping is injective: `~` itself is escaped, and the empty
//! name, which NATS cannot carry as a token, is the lone `~` no escape produces.

/// Escapes a name into a subject token.
pub fn token(name: &str) -> String {
    if name.is_empty() {
        return "~".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('~');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
    out
}

/// Reverses [`token`]; `None` for a string `token` cannot produce.
pub fn untoken(tok: &str) -> Option<String> {
    if tok == "~" {
        return Some(String::new());
    }
    let bytes = tok.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'~' {
            let hex = tok.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
            {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || v == b'_' || v == b'-' {
                return None; // never escaped, so not canonical
            }
            out.push(v);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    if out.is_empty() {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Builds the subjects of one roomcast cluster.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// `cluster` names this roomcast cluster, so several can share one NATS.
    pub fn new(cluster: &str) -> Self {
        Self {
            prefix: format!("rc.{}", token(cluster)),
        }
    }

    pub fn room(&self, ns: &str, room: &str) -> String {
        format!("{}.room.{}.{}", self.prefix, token(ns), token(room))
    }

    pub fn namespace(&self, ns: &str) -> String {
        format!("{}.ns.{}", self.prefix, token(ns))
    }

    pub fn edges(&self) -> String {
        format!("{}.edges", self.prefix)
    }

    /// Commands for the sockets whose id carries route tag `tag`: the edge
    /// that generated them listens, and any edge a socket of the tag was
    /// recovered on.
    pub fn tag(&self, tag: &str) -> String {
        format!("{}.sock.{}", self.prefix, token(tag))
    }

    /// Polling requests (and relayed WebSocket upgrades) for the sessions
    /// whose sid carries route tag `tag`, forwarded by the edges they came to.
    pub fn poll(&self, tag: &str) -> String {
        format!("{}.poll.{}", self.prefix, token(tag))
    }

    /// Where edges say they are alive (and that they leave).
    pub fn heartbeats(&self) -> String {
        format!("{}.hb", self.prefix)
    }

    pub fn node(&self, node_id: &str) -> String {
        format!("{}.node.{}", self.prefix, token(node_id))
    }

    /// The subjects an emit to `target` is published on: the namespace's, or
    /// each room's plus the edges subject when sockets or users are named.
    pub fn emit_subjects(&self, target: &crate::envelope::Target) -> Vec<String> {
        if target.is_namespace() {
            return vec![self.namespace(&target.ns)];
        }
        let mut subjects: Vec<String> = target
            .rooms
            .iter()
            .map(|r| self.room(&target.ns, r))
            .collect();
        if !target.sockets.is_empty() || !target.users.is_empty() {
            subjects.push(self.edges());
        }
        subjects
    }

    /// Where edges publish their Admin UI `server_stats` rows.
    pub fn admin_stats(&self) -> String {
        format!("{}.adminui.stats", self.prefix)
    }

    /// Presence events (connects, disconnects, joins, leaves, online, offline).
    pub fn presence_events(&self) -> String {
        format!("{}.presence", self.prefix)
    }

    /// Every NATS reply subject an edge gives client events that want an ack.
    pub fn ack_replies(&self, node_id: &str) -> String {
        format!("{}.ack.{}.>", self.prefix, token(node_id))
    }

    /// The NATS reply subject of one client event that wants an ack.
    pub fn ack_reply(&self, node_id: &str, socket: &str, ack_id: u64) -> String {
        format!(
            "{}.ack.{}.{}.{ack_id}",
            self.prefix,
            token(node_id),
            token(socket)
        )
    }

    /// The socket and ack id of an ack reply subject of this node.
    pub fn parse_ack_reply(&self, node_id: &str, subject: &str) -> Option<(String, u64)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".ack.")?
            .strip_prefix(&token(node_id))?
            .strip_prefix('.')?;
        let (socket, ack) = rest.split_once('.')?;
        Some((untoken(socket)?, ack.parse().ok()?))
    }

    /// Whether a subject is the node subject of some edge of this cluster.
    pub fn is_node(&self, subject: &str) -> bool {
        subject
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix(".node."))
            .is_some_and(|node| untoken(node).is_some())
    }

    /// Client events; `None` stands for every namespace or every event.
    /// Where edges announce sockets' connects and disconnects (of one
    /// namespace, or `None`: every namespace, as a wildcard for subscribers).
    pub fn connections(&self, ns: Option<&str>) -> String {
        format!(
            "{}.conn.{}",
            self.prefix,
            ns.map_or_else(|| "*".to_owned(), token)
        )
    }

    pub fn client_events(&self, ns: Option<&str>, event: Option<&str>) -> String {
        format!(
            "{}.in.{}.{}",
            self.prefix,
            ns.map_or_else(|| "*".to_owned(), token),
            event.map_or_else(|| "*".to_owned(), token)
        )
    }

    /// Where an emit to a recoverable room is stored: the history stream keeps
    /// these subjects and republishes each message, with its sequence, on the
    /// room's subject.
    pub fn history(&self, ns: &str, room: &str) -> String {
        format!("{}.rh.{}.{}", self.prefix, token(ns), token(room))
    }

    /// Every history subject of this cluster, and where the stream republishes
    /// them: `(rc.<c>.rh.>, rc.<c>.room.>)`.
    pub fn history_republish(&self) -> (String, String) {
        (
            format!("{}.rh.>", self.prefix),
            format!("{}.room.>", self.prefix),
        )
    }

    /// The namespace and room of a history subject of this cluster.
    pub fn parse_history(&self, subject: &str) -> Option<(String, String)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".rh.")?;
        let (ns, room) = rest.split_once('.')?;
        Some((untoken(ns)?, untoken(room)?))
    }

    /// The namespace and room of a room subject of this cluster.
    pub fn parse_room(&self, subject: &str) -> Option<(String, String)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".room.")?;
        let (ns, room) = rest.split_once('.')?;
        Some((untoken(ns)?, untoken(room)?))
    }
}

/// Whether a subject (or, with `wildcards`, a subscription pattern) is valid.
pub fn is_valid(subject: &str, wildcards: bool) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(tok) = tokens.next() {
        if tok.is_empty() || tok.bytes().any(|b| b.is_ascii_whitespace()) {
            return false;
        }
        let wild = tok == "*" || tok == ">";
        if !wildcards && (tok.contains('*') || tok.contains('>')) {
            return false;
        }
        if wildcards && !wild && (tok.contains('*') || tok.contains('>')) {
            return false;
        }
        if tok == ">" && tokens.peek().is_some() {
            return false;
        }
    }
    true
}

/// Whether a pattern has wildcard tokens.
pub fn has_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|t| t == "*" || t == ">")
}

/// Whether a subject matches a subscription pattern (NATS rules).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_reply_subjects_round_trip_and_match_the_edge_pattern() {
        let s = Subjects::new("c");
        let subject = s.ack_reply("node.1", "sid-x_1", 42);
        assert!(is_valid(&subject, false));
        assert!(matches(&s.ack_replies("node.1"), &subject));
        assert!(!matches(&s.ack_replies("node"), &subject));
        assert_eq!(
            s.parse_ack_reply("node.1", &subject),
            Some(("sid-x_1".to_owned(), 42))
        );
        assert_eq!(s.parse_ack_reply("node.2", &subject), None);
        assert_eq!(s.parse_ack_reply("node.1", "rc.c.ack.node~2E1.sid.x"), None);
    }
    use proptest::prelude::*;

    #[test]
    fn escapes_what_nats_forbids() {
        assert_eq!(token("chat"), "chat");
        assert_eq!(token("a.b"), "a~2Eb");
        assert_eq!(token("*"), "~2A");
        assert_eq!(token(">"), "~3E");
        assert_eq!(token("a b"), "a~20b");
        assert_eq!(token("~"), "~7E");
        assert_eq!(token("/"), "~2F");
        assert_eq!(token(""), "~");
        assert_eq!(token("é"), "~C3~A9");
    }

    #[test]
    fn builds_subjects() {
        let s = Subjects::new("prod");
        assert_eq!(s.room("/", "news.eu"), "rc.prod.room.~2F.news~2Eeu");
        assert_eq!(s.namespace("/admin"), "rc.prod.ns.~2Fadmin");
        assert_eq!(s.client_events(None, Some("chat")), "rc.prod.in.*.chat");
        assert_eq!(
            s.parse_room("rc.prod.room.~2F.news~2Eeu"),
            Some(("/".into(), "news.eu".into()))
        );
        assert!(is_valid(&s.room("/", "a b.*>"), false));
        assert!(s.is_node(&s.node("n1")));
        assert!(!s.is_node("rc.prod.node.a.b"));
        assert!(!s.is_node("rc.other.node.n1"));
        assert!(!s.is_node(&s.edges()));
    }

    #[test]
    fn matches_nats_wildcards() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
    }

    #[test]
    fn rejects_non_canonical_tokens() {
        assert_eq!(untoken("~61"), None, "'a' is never escaped");
        assert_eq!(untoken("~2e"), None, "lower-case hex is never produced");
        assert_eq!(untoken("a.b"), None);
        assert_eq!(untoken("~2"), None);
        assert_eq!(untoken(""), None);
    }

    proptest! {
        #[test]
        fn token_round_trips(name in "\\PC{0,40}") {
            prop_assert_eq!(untoken(&token(&name)), Some(name));
        }

        #[test]
        fn token_is_injective(a in "\\PC{0,12}", b in "\\PC{0,12}") {
            prop_assume!(a != b);
            prop_assert_ne!(token(&a), token(&b));
        }

        #[test]
        fn subjects_are_valid_and_never_wildcards(ns in "\\PC{0,12}", room in "\\PC{0,20}") {
            let s = Subjects::new("c");
            let subject = s.room(&ns, &room);
            prop_assert!(is_valid(&subject, false));
            prop_assert!(!has_wildcard(&subject));
            prop_assert_eq!(s.parse_room(&subject), Some((ns.clone(), room.clone())));
            let stored = s.history(&ns, &room);
            prop_assert!(is_valid(&stored, false));
            prop_assert_eq!(s.parse_history(&stored), Some((ns, room)));
        }

        #[test]
        fn untoken_never_panics(s in "\\PC{0,20}") {
            let _ = untoken(&s);
        }
    }
}
