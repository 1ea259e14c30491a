//! `cohort`: one binary for the relay and its tools.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The relay allocates a little per message on many threads; mimalloc spends less CPU on
// that than glibc's allocator (malloc was ~12% of relay CPU in the route profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod serve;
mod threshold;

use cohort_tss::Curve;
use std::time::Duration;

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
    /// Run a whole threshold signing through an embedded relay: N parties, FROST keygen,
    /// t-of-n signing, independent verification, a table of results.
    Demo {
        #[arg(long, default_value_t = 5)]
        parties: u16,
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// ed25519 or secp256k1-tr (BIP-340 Schnorr, Taproot)
        #[arg(long, default_value = "ed25519")]
        curve: Curve,
    },
    /// Run a party: join the sessions this party is selected for, keep its key shares in an
    /// encrypted key store (passphrase from $COHORT_PASSPHRASE, or --key-file). The relay
    /// admits it once a coordinator enrolled its identity key (`--print-identity` prints it
    /// for `cohort enroll`).
    Party {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        relay: String,
        #[arg(long)]
        party_id: String,
        #[arg(long)]
        key_store: PathBuf,
        /// A file of at least 32 random bytes to encrypt the key store, instead of a passphrase.
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long, default_value = "COHORT_PASSPHRASE")]
        passphrase_env: String,
        /// Trusted coordinator public key (hex); repeatable. Default: the public half of
        /// --coordinator-key.
        #[arg(long = "coordinator")]
        coordinators: Vec<String>,
        #[arg(long, default_value = "./cohort-data/coordinator.key")]
        coordinator_key: PathBuf,
        /// Print this party's identity public key (hex), for `cohort enroll`, and exit. Creates
        /// the key store if it does not exist yet.
        #[arg(long)]
        print_identity: bool,
    },
    /// Coordinator: enroll a party, binding its party id to its Ed25519 identity key, so that
    /// key alone may log in as it (`cohort party` logs its key at start).
    Enroll {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        relay: String,
        #[arg(long)]
        party_id: String,
        /// The party's identity public key, 64 hex characters.
        #[arg(long)]
        key: String,
        /// The only role the party may register with: persistent, delegate or temporary.
        /// Default: any.
        #[arg(long, default_value = "")]
        role: String,
        #[arg(long, default_value = "./cohort-data/coordinator.key")]
        coordinator_key: PathBuf,
    },
    /// Coordinator: create a t-of-n key among registered parties and print its public key.
    Keygen {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        relay: String,
        /// Comma-separated party ids.
        #[arg(long, value_delimiter = ',', required = true)]
        parties: Vec<String>,
        #[arg(long)]
        threshold: u16,
        #[arg(long, default_value = "ed25519")]
        curve: Curve,
        #[arg(long, default_value = "./cohort-data/coordinator.key")]
        coordinator_key: PathBuf,
        /// Seconds to wait for the parties.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Coordinator: sign a message with a key made by `cohort keygen`.
    Sign {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        relay: String,
        /// The group public key (hex) that keygen printed.
        #[arg(long)]
        key: String,
        #[arg(long)]
        message: String,
        /// Comma-separated signers; default: the first t online holders.
        #[arg(long, value_delimiter = ',')]
        signers: Option<Vec<String>>,
        #[arg(long, default_value = "./cohort-data/coordinator.key")]
        coordinator_key: PathBuf,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Measure the relay: throughput, latency, scale; side by side with NATS JetStream.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Daemons log what they do; one-shot tools only warn, so their output stays readable.
    let default_level = match cli.command {
        Command::Serve { .. } | Command::Party { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COHORT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
            Command::Demo {
                parties,
                threshold,
                curve,
            } => {
                threshold::demo(threshold::DemoArgs {
                    parties,
                    threshold,
                    curve,
                })
                .await
            }
            Command::Party {
                relay,
                party_id,
                key_store,
                key_file,
                passphrase_env,
                coordinators,
                coordinator_key,
                print_identity,
            } => {
                threshold::party(threshold::PartyArgs {
                    relay,
                    party_id,
                    key_store,
                    key_file,
                    passphrase_env,
                    coordinators,
                    coordinator_key,
                    print_identity,
                })
                .await
            }
            Command::Enroll {
                relay,
                party_id,
                key,
                role,
                coordinator_key,
            } => threshold::enroll(&relay, &coordinator_key, &party_id, &key, &role).await,
            Command::Keygen {
                relay,
                parties,
                threshold,
                curve,
                coordinator_key,
                timeout,
            } => {
                threshold::keygen(
                    &relay,
                    &coordinator_key,
                    parties,
                    threshold,
                    curve,
                    Duration::from_secs(timeout),
                )
                .await
            }
            Command::Sign {
                relay,
                key,
                message,
                signers,
                coordinator_key,
                timeout,
            } => {
                threshold::sign(
                    &relay,
                    &coordinator_key,
                    &key,
                    &message,
                    signers,
                    Duration::from_secs(timeout),
                )
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
