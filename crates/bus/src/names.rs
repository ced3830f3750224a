//! Rules for the names users give: namespaces, rooms, socket ids.
//!
//! Both edges and the control plane check names with these functions, so a name
//! one side accepts is never refused by the other.

/// The longest room or namespace name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Length of the socket ids edges generate.
pub const SOCKET_ID_LEN: usize = 20;

/// A room name: 1 to 256 bytes of UTF-8.
pub fn valid_room(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

/// A namespace: `/` followed by up to 255 bytes.
pub fn valid_namespace(name: &str) -> bool {
    name.starts_with('/') && name.len() <= MAX_NAME_LEN
}

/// Whether a name has the form of a socket id (20 characters of base64url).
/// Every socket is in the room named by its id; such rooms are routed to the
/// socket directly rather than through a room subject.
pub fn looks_like_socket_id(name: &str) -> bool {
    name.len() == SOCKET_ID_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A new random id of the socket id form (120 random bits).
pub fn new_id() -> String {
    let bytes: [u8; 15] = rand::random();
    let mut out = String::with_capacity(SOCKET_ID_LEN);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    out
}

/// Length of a route tag: the first characters of the socket ids an edge
/// generates, which say where commands for the socket go.
pub const ROUTE_TAG_LEN: usize = 5;

/// The route tag of an edge: 30 bits of a hash of its node id (FNV-1a, so
/// every process and version computes the same), in the socket id alphabet.
/// Two edges may share a tag (about one pair in 10^7 among 100 edges): both
/// then listen on it, and both answer.
pub fn route_tag(node_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in node_id.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..ROUTE_TAG_LEN)
        .map(|i| ALPHABET[((h >> (6 * i)) & 63) as usize] as char)
        .collect()
}

/// A new socket id that starts with `tag` (see [`route_tag`]); the rest is
/// random (90 bits).
pub fn new_socket_id(tag: &str) -> String {
    let random = new_id();
    let mut out = String::with_capacity(SOCKET_ID_LEN);
    out.push_str(tag.get(..ROUTE_TAG_LEN).unwrap_or(tag));
    out.push_str(&random[out.len()..]);
    out
}

/// The route tag a socket id carries: its first characters, when it has the
/// socket id form (ids edges generated before route tags existed carry one
/// too, which no edge owns: their edge listens on it, as on the tag of a
/// socket recovered from another edge).
pub fn tag_of(socket_id: &str) -> Option<&str> {
    if looks_like_socket_id(socket_id) {
        socket_id.get(..ROUTE_TAG_LEN)
    } else {
        None
    }
}

/// Whether a string is a route tag (what heartbeats may announce).
pub fn valid_tag(tag: &str) -> bool {
    tag.len() == ROUTE_TAG_LEN
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_socket_id_form() {
        let a = new_id();
        assert!(looks_like_socket_id(&a), "{a}");
        assert_ne!(a, new_id());
        assert!(!looks_like_socket_id("short"));
        assert!(!looks_like_socket_id("aaaaaaaaaaaaaaaaaaa."));
    }

    #[test]
    fn socket_ids_carry_their_edge_s_route_tag() {
        let tag = route_tag("edge-7f9c-x2x9z");
        assert!(valid_tag(&tag), "{tag}");
        assert_eq!(tag, route_tag("edge-7f9c-x2x9z"), "a pure function");
        assert_ne!(tag, route_tag("edge-7f9c-x2x9y"));
        let id = new_socket_id(&tag);
        assert!(looks_like_socket_id(&id), "{id}");
        assert_eq!(tag_of(&id), Some(tag.as_str()));
        assert_ne!(id, new_socket_id(&tag));
        assert_eq!(tag_of("short"), None);
        assert_eq!(tag_of("room with spaces and more"), None);
        // Tags of many node ids rarely collide (30 bits).
        let tags: std::collections::HashSet<String> = (0..10_000)
            .map(|i| route_tag(&format!("edge-{i}")))
            .collect();
        assert!(tags.len() >= 9_990, "{} distinct tags", tags.len());
    }

    #[test]
    fn checks_names() {
        assert!(valid_room("a"));
        assert!(!valid_room(""));
        assert!(!valid_room(&"x".repeat(MAX_NAME_LEN + 1)));
        assert!(valid_namespace("/"));
        assert!(valid_namespace("/admin"));
        assert!(!valid_namespace("admin"));
    }
}
