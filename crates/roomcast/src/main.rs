//! The `roomcast` binary: parse settings, build the processes, run them.

#![forbid(unsafe_code)]

mod config;
mod standalone;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use config::{LogFormat, Settings};

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

#[derive(Subcommand)]
enum Command {
    /// Edge and gRPC API in one process, with an in-memory bus: no dependencies.
    Standalone {
        /// TOML config file; flags and ROOMCAST_* variables override it.
        #[arg(short, long, env = "ROOMCAST_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

fn init_logs(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(settings.log.as_deref().unwrap_or("info"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format.unwrap_or(LogFormat::Plain) {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let Command::Standalone { config, settings } = cli.command;
    let settings = match config {
        Some(path) => match Settings::from_file(&path) {
            Ok(file) => settings.or(file),
            Err(e) => return fail(&e),
        },
        None => settings,
    };
    init_logs(&settings);
    let resolved = match settings.resolve() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match runtime.block_on(standalone::run(resolved)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("roomcast: {e:#}");
    std::process::ExitCode::from(2)
}
