//! Drift check for the checked-in generated code.
//!
//! `generate` compiles `proto/roomcast/v1/roomcast.proto` with the pure-Rust
//! `protox` compiler (no system `protoc`) and runs `tonic-prost-build` on the
//! result. The test then compares its output byte for byte with the files in
//! `crates/api/src/gen/`, or, when `ROOMCAST_REGENERATE=1` is set, overwrites
//! them with it:
//!
//! ```text
//! ROOMCAST_REGENERATE=1 cargo test -p roomcast-api --test codegen
//! ```
//!
//! Checking and regenerating share `generate`, so they cannot diverge.

use std::fs;
use std::path::{Path, PathBuf};

/// The proto files compiled, relative to the include directory `proto/`.
const PROTOS: &[&str] = &["roomcast/v1/roomcast.proto"];

/// The Rust module prost-build writes for package `roomcast.v1`.
const RUST_FILE: &str = "roomcast.v1.rs";

/// The encoded `FileDescriptorSet` (with imports and source info) that
/// `roomcast_api::FILE_DESCRIPTOR_SET` serves to gRPC reflection.
const DESCRIPTOR_FILE: &str = "roomcast_descriptor.bin";

/// Every file the generator writes, in the order they are checked.
const GENERATED: &[&str] = &[RUST_FILE, DESCRIPTOR_FILE];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory with the `.proto` sources (the workspace's `proto/`).
fn proto_dir() -> PathBuf {
    manifest_dir().join("../../proto")
}

/// Where the generated files are checked in.
fn checked_in_dir() -> PathBuf {
    manifest_dir().join("src/gen")
}

/// Generates every file of [`GENERATED`] into `out_dir`. The one code path for
/// both the drift check and regeneration.
fn generate(out_dir: &Path) {
    let includes = [proto_dir()];
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| includes[0].join(p)).collect();
    let fds = protox::compile(&files, &includes).expect("compile proto with protox");

    let descriptor = prost::Message::encode_to_vec(&fds);
    fs::write(out_dir.join(DESCRIPTOR_FILE), descriptor).expect("write descriptor set");

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_fds(fds)
        .expect("generate Rust code with tonic-prost-build");
}

fn regenerate_requested() -> bool {
    std::env::var_os("ROOMCAST_REGENERATE").is_some_and(|v| v == "1")
}

#[test]
fn generated_code_matches_checked_in_files() {
    let tmp = tempfile::tempdir().expect("create temp dir");
    generate(tmp.path());

    // The generator must write exactly the files we check in; anything else
    // (say, a new proto package) needs this test and lib.rs updated.
    let mut produced: Vec<String> = fs::read_dir(tmp.path())
        .expect("list generated files")
        .map(|e| {
            e.expect("read dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    produced.sort();
    let mut expected: Vec<String> = GENERATED.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(produced, expected, "unexpected set of generated files");

    let target_dir = checked_in_dir();
    if regenerate_requested() {
        fs::create_dir_all(&target_dir).expect("create src/gen");
        for name in GENERATED {
            let fresh = fs::read(tmp.path().join(name)).expect("read generated file");
            fs::write(target_dir.join(name), fresh).expect("write checked-in file");
        }
        return;
    }

    let mut stale = Vec::new();
    for name in GENERATED {
        let fresh = fs::read(tmp.path().join(name)).expect("read generated file");
        let checked_in = fs::read(target_dir.join(name)).unwrap_or_default();
        if fresh != checked_in {
            stale.push(*name);
        }
    }
    assert!(
        stale.is_empty(),
        "checked-in generated files are out of date: {stale:?} in {}.\n\
         Regenerate with: ROOMCAST_REGENERATE=1 cargo test -p roomcast-api --test codegen",
        target_dir.display(),
    );
}

#[test]
fn descriptor_set_describes_the_service() {
    let pool = protox::prost_reflect::DescriptorPool::decode(roomcast_api::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET decodes");
    let service = pool
        .get_service_by_name("roomcast.v1.Roomcast")
        .expect("service roomcast.v1.Roomcast is described");
    let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
    assert_eq!(
        methods,
        [
            "Emit",
            "EmitStream",
            "JoinRooms",
            "LeaveRooms",
            "ConsumeEvents",
            "Reply",
            "EmitWithAck",
            "DisconnectSockets",
            "FetchSockets",
            "ListRooms",
            "GetPresence",
            "WatchPresence",
            "WatchConnections",
            "GetDelivery",
            "GetInbox",
            "PurgeInbox"
        ]
    );
}
