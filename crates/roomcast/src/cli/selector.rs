//! The flags that select sockets, shared by emit, sockets, join, leave and
//! disconnect.

use clap::Args;
use roomcast_api::v1::Selector;

/// Which sockets: the union of rooms, sockets and users (the whole namespace
/// when none is given), less the exceptions.
#[derive(Args)]
pub struct SelectorFlags {
    /// Namespace
    #[arg(long, short, default_value = "/")]
    namespace: String,
    /// A room; repeat for several
    #[arg(long = "room", short, allow_hyphen_values = true, value_parser = target_name)]
    rooms: Vec<String>,
    /// A socket id; repeat for several
    #[arg(long = "socket", short, allow_hyphen_values = true, value_parser = target_name)]
    sockets: Vec<String>,
    /// A user id; repeat for several
    #[arg(long = "user", short, allow_hyphen_values = true, value_parser = target_name)]
    users: Vec<String>,
    /// Leave out sockets in this room; repeat for several
    #[arg(long = "except-room", allow_hyphen_values = true, value_parser = target_name)]
    except_rooms: Vec<String>,
    /// Leave out this socket; repeat for several
    #[arg(long = "except-socket", allow_hyphen_values = true, value_parser = target_name)]
    except_sockets: Vec<String>,
}

impl SelectorFlags {
    pub fn selector(self) -> Selector {
        Selector {
            namespace: self.namespace,
            rooms: self.rooms,
            socket_ids: self.sockets,
            user_ids: self.users,
            except_rooms: self.except_rooms,
            except_socket_ids: self.except_sockets,
        }
    }
}

/// A room, socket id or user given to a flag. Socket ids (like rooms and
/// users) may begin with `-`, so these flags take such values; a value that
/// begins with `--` is a flag written where the value was forgotten.
pub fn target_name(value: &str) -> Result<String, String> {
    if value.starts_with("--") {
        return Err(format!("a value is missing before {value}"));
    }
    Ok(value.to_owned())
}
