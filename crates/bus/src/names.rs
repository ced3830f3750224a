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

/// A new random id of the socket id form (120 random bits).
pub fn new_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
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
    fn checks_names() {
        assert!(valid_room("a"));
        assert!(!valid_room(""));
        assert!(!valid_room(&"x".repeat(MAX_NAME_LEN + 1)));
        assert!(valid_namespace("/"));
        assert!(valid_namespace("/admin"));
        assert!(!valid_namespace("admin"));
    }
}
