//! `cohort bench`: measures the whole system (real gRPC on loopback, the real SQLite store
//! with its fsyncs) and, where a peer exists, measures the peer in the same run on the same
//! machine, so the comparison survives a noisy machine.
//!
//! Each workload is one file and one subcommand: [`route`] (throughput and latency of the
//! mailbox path, optionally against NATS JetStream) and [`scale`] (many subscribers, deep
//! queues). The rest is shared: [`relay_proc`] starts or attaches to the relay under test,
//! [`wire_client`] logs parties in over the wire, [`probe`] stamps payloads and collects
//! latencies, [`report`] prints the table and writes `--json` and `--plot`.
//! A new workload (FROST `sign`, `keygen`) is a new file, a variant of [`Workload`] and an
//! arm in [`run`].

mod frost;
mod nats;
mod probe;
mod relay_proc;
mod report;
mod route;
mod scale;
mod wire_client;

use std::path::PathBuf;

/// Arguments of `cohort bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(clap::Subcommand)]
enum Workload {
    /// S senders, R receivers in one session, point to point; receivers subscribe and ack.
    /// Messages/s, end-to-end latency, relay CPU per 100k messages and peak RSS.
    Route(route::RouteArgs),
    /// Many concurrently subscribed parties under a steady send rate (RSS per stream, p99),
    /// then send+ack throughput with 0 vs N messages queued for offline parties.
    Scale(scale::ScaleArgs),
    /// t-of-n FROST signing sessions through the relay, many at once (sessions/s, latency),
    /// next to the same FROST work with in-process channels.
    Sign(frost::SignArgs),
    /// One large FROST DKG through the relay (wall time, messages, bytes), next to the
    /// in-process figure.
    Keygen(frost::KeygenArgs),
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    match args.workload {
        Workload::Route(a) => route::run(a).await,
        Workload::Scale(a) => scale::run(a).await,
        Workload::Sign(a) => frost::sign(a).await,
        Workload::Keygen(a) => frost::keygen(a).await,
    }
}

/// The relay's durability setting (`cohort serve --durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// fsync at every commit: an acknowledged message survives a power cut.
    Full,
    /// fsync at checkpoints: survives a crash of the process, not of the machine.
    Normal,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        }
    }
}

/// Where the relay under test runs; shared by every workload.
#[derive(clap::Args, Clone)]
pub struct RelayOpts {
    /// Attach to a running relay (e.g. http://127.0.0.1:50051) instead of spawning one.
    /// Its CPU time and memory are then not measured.
    #[arg(long, requires = "coordinator_key")]
    relay: Option<String>,
    /// With --relay: file holding the hex Ed25519 secret of a coordinator key of that relay
    /// (`<data-dir>/coordinator.key` of a relay started without configured keys).
    #[arg(long)]
    coordinator_key: Option<PathBuf>,
}

/// What every workload writes besides the table.
#[derive(clap::Args, Clone)]
pub struct OutputOpts {
    /// Write every figure and parameter as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write an SVG chart (latency histogram, throughput over time) to this file.
    #[arg(long, value_name = "PATH.svg")]
    plot: Option<PathBuf>,
}
