//! The `roomcast` binary: parse settings, build the processes, run them.

#![forbid(unsafe_code)]

mod admin;
mod cli;
mod cluster;
mod config;
mod keeper;
mod metrics;
mod probes;
mod serve;
mod standalone;
mod telemetry;
mod tls;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use config::{Role, Settings};

#[derive(Parser)]
#[command(
    name = "roomcast",
    version,
    about = "Socket.IO-compatible real-time broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RoleOptions {
    /// TOML config file; flags and ROOMCAST_* variables override it.
    #[arg(short, long, env = "ROOMCAST_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Edge and gRPC API in one process, with an in-memory bus: no dependencies.
    Standalone(RoleOptions),
    /// A cluster edge: serves Socket.IO clients, subscribes to rooms on NATS.
    Edge(RoleOptions),
    /// A cluster control plane: serves the gRPC API over NATS.
    Control(RoleOptions),
    #[command(flatten)]
    Api(cli::ApiCommand),
}

/// The command line, with each setting's default in its help.
fn command() -> clap::Command {
    [Role::Standalone, Role::Edge, Role::Control]
        .into_iter()
        .fold(Cli::command(), |cmd, role| {
            cmd.mut_subcommand(role.name(), config::show_defaults)
        })
}

fn main() -> std::process::ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let (role, RoleOptions { config, settings }) = match cli.command {
        Command::Standalone(o) => (Role::Standalone, o),
        Command::Edge(o) => (Role::Edge, o),
        Command::Control(o) => (Role::Control, o),
        Command::Api(cmd) => return run_api_command(cmd),
    };
    if let Some(role_matches) = matches.subcommand_matches(role.name()) {
        if let Err(e) = config::refuse_foreign_flags(role, role_matches) {
            return fail(&e);
        }
    }
    let settings = match config {
        Some(path) => match Settings::from_file(&path) {
            Ok(file) => settings.or(file),
            Err(e) => return fail(&e),
        },
        None => settings,
    };
    let mut resolved = match settings.resolve(role) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let metrics = match metrics::install(role) {
        Ok(handle) => handle,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    let telemetry = {
        let _in_runtime = runtime.enter();
        let traces = resolved.traces.take();
        match telemetry::init(role, Some(&resolved.log), resolved.log_format, traces) {
            Ok(t) => t,
            Err(e) => return fail(&e),
        }
    };
    let run = async move {
        match role {
            Role::Standalone => standalone::run(resolved, metrics).await,
            Role::Edge => cluster::run_edge(resolved, metrics).await,
            Role::Control => cluster::run_control(resolved, metrics).await,
        }
    };
    let result = runtime.block_on(run);
    // Flush the spans of the last moments while the runtime still runs.
    drop(telemetry);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Runs one API subcommand on a small runtime.
fn run_api_command(cmd: cli::ApiCommand) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match runtime.block_on(cli::run(cmd)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Reports why a process could not start or stopped with an error (exit 2;
/// a failed API command exits 1).
fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("roomcast: {e:#}");
    std::process::ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_is_well_formed() {
        super::command().debug_assert();
    }

    #[test]
    fn the_settings_a_role_refuses_are_flags_of_it() {
        let cli = super::command();
        for role in ["standalone", "edge", "control"] {
            let cmd = cli.find_subcommand(role).expect("role subcommand");
            for list in [
                super::config::CLIENT_SETTINGS,
                super::config::API_SETTINGS,
                super::config::CLUSTER_SETTINGS,
            ] {
                for id in list {
                    assert!(
                        cmd.get_arguments().any(|a| a.get_id() == *id),
                        "{role}: no setting {id}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flag_a_role_does_not_use_is_refused_with_a_message() {
        use super::config::{refuse_foreign_flags, Role};
        let check = |args: &[&str]| {
            let matches = super::command()
                .try_get_matches_from(args)
                .expect("valid flags");
            let (name, sub) = matches.subcommand().expect("a role");
            let role = match name {
                "standalone" => Role::Standalone,
                "edge" => Role::Edge,
                _ => Role::Control,
            };
            refuse_foreign_flags(role, sub).map_err(|e| e.to_string())
        };
        let err = check(&["roomcast", "control", "--listen", "0.0.0.0:3000"]).expect_err("refused");
        assert!(
            err.starts_with("--listen does not apply to `roomcast control`"),
            "{err}"
        );
        let err = check(&[
            "roomcast",
            "edge",
            "--api-key",
            "k",
            "--grpc-listen",
            "127.0.0.1:1",
        ])
        .expect_err("refused");
        assert!(
            err.starts_with("--grpc-listen, --api-key do not apply")
                || err.starts_with("--api-key, --grpc-listen do not apply"),
            "{err}"
        );
        let err =
            check(&["roomcast", "standalone", "--nats-url", "nats://x:4222"]).expect_err("refused");
        assert!(err.contains("standalone runs without NATS"), "{err}");
        // What each role uses passes.
        check(&[
            "roomcast",
            "edge",
            "--listen",
            "0.0.0.0:3000",
            "--jwt-secret",
            "0123456789abcdef",
            "--nats-url",
            "nats://x:4222",
        ])
        .expect("an edge's flags");
        check(&[
            "roomcast",
            "control",
            "--grpc-listen",
            "0.0.0.0:50051",
            "--api-key",
            "k",
            "--presence-grace-ms",
            "0",
        ])
        .expect("a control plane's flags");
        check(&[
            "roomcast",
            "standalone",
            "--listen",
            "0.0.0.0:3000",
            "--api-key",
            "k",
            "--allow-anonymous",
        ])
        .expect("standalone's flags");
    }

    /// Socket ids (and room or user names) may begin with `-`; the selector
    /// flags take them as values instead of reading them as flags.
    #[test]
    fn selector_values_may_begin_with_a_hyphen() {
        use clap::Parser;
        let args = [
            "roomcast",
            "emit",
            "ev",
            "-s",
            "-12kUINnGq",
            "--except-socket",
            "-x",
            "-r",
            "-room",
            "-u",
            "-dave",
        ];
        let parsed = super::Cli::try_parse_from(args).map_err(|e| e.to_string());
        assert!(parsed.is_ok(), "{parsed:?}", parsed = parsed.err());
        let args = ["roomcast", "inbox", "-s", "-12kUINnGq"];
        assert!(super::Cli::try_parse_from(args).is_ok());
        // A forgotten value is not filled with the next flag.
        let err = super::Cli::try_parse_from(["roomcast", "emit", "ev", "-s", "--json"])
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("a value is missing before --json")),
            "{err:?}"
        );
    }
}
