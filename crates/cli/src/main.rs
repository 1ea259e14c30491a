//! `cohort`: one binary for the relay and its tools.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod serve;

#[derive(Parser)]
#[command(
    name = "cohort",
    version,
    about = "A relay and coordinator for multi-party cryptography"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay. With no flags: data in ./cohort-data, gRPC on 127.0.0.1:50051,
    /// metrics on 127.0.0.1:9464.
    Serve {
        /// TOML config file; COHORT_* environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory (overrides the config file and COHORT_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// gRPC listen address, e.g. 127.0.0.1:50051 (overrides config and environment).
        #[arg(long)]
        grpc_addr: Option<std::net::SocketAddr>,
        /// Metrics listen address; "off" turns the endpoint off.
        #[arg(long)]
        metrics_addr: Option<String>,
        /// full (fsync each commit) or normal (fsync at checkpoints).
        #[arg(long)]
        durability: Option<String>,
    },
    /// Measure the relay: throughput, latency, scale; side by side with NATS JetStream.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COHORT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                config,
                data_dir,
                grpc_addr,
                metrics_addr,
                durability,
            } => {
                serve::run(serve::Overrides {
                    config,
                    data_dir,
                    grpc_addr,
                    metrics_addr,
                    durability,
                })
                .await
            }
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
