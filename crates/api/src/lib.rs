//! Rust bindings for the roomcast gRPC control API (`roomcast.v1`).
//!
//! This crate holds the code generated from
//! `proto/roomcast/v1/roomcast.proto` (at the workspace root):
//! the [prost] messages, the [tonic] client
//! ([`v1::roomcast_client::RoomcastClient`]) and the server trait and service
//! ([`v1::roomcast_server::Roomcast`], [`v1::roomcast_server::RoomcastServer`]),
//! plus the encoded [`FILE_DESCRIPTOR_SET`] for `tonic-reflection`.
//!
//! ```
//! use roomcast_api::v1::{EmitRequest, Selector};
//!
//! let request = EmitRequest {
//!     to: Some(Selector {
//!         rooms: vec!["lobby".to_owned()],
//!         ..Default::default()
//!     }),
//!     event: "chat".to_owned(),
//!     args_json: r#"[{"text":"hi"}]"#.to_owned(),
//!     ..Default::default()
//! };
//! assert_eq!(request.to.map(|s| s.rooms), Some(vec!["lobby".to_owned()]));
//! ```
//!
//! # Regenerating
//!
//! The generated files are checked in under `crates/api/src/gen/`, so building
//! this crate needs neither `protoc` nor a build script. The test
//! `tests/codegen.rs` compiles the proto with the pure-Rust `protox` compiler,
//! runs `tonic-prost-build` on it and fails if the result differs from the
//! checked-in files. After changing the proto (or the code generator's
//! versions in `Cargo.lock`), regenerate with:
//!
//! ```text
//! ROOMCAST_REGENERATE=1 cargo test -p roomcast-api --test codegen
//! ```
//!
//! and commit the updated `src/gen/roomcast.v1.rs` and
//! `src/gen/roomcast_descriptor.bin`. Never edit them by hand.

/// The `roomcast.v1` protobuf package: messages, the `Roomcast` client and the
/// `Roomcast` server.
pub mod v1 {
    include!("gen/roomcast.v1.rs");
}

/// The encoded `google.protobuf.FileDescriptorSet` of `roomcast/v1/roomcast.proto`
/// (with source info), for `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/roomcast_descriptor.bin");
