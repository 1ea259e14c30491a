//! `cohort bench route`: S senders and R receivers in one session send point to point,
//! round-robin, with several messages in flight per sender; receivers take every message
//! and acknowledge it. Two APIs: `--api stream` (default; `cohort.v1.Mailbox`, what the SDK
//! uses: one stream per party, batched sends, credit, cumulative acks) and `--api router`
//! (`mpc.router.v1`: a RouteMessage call per message, a SubscribeMessages stream, an
//! AcknowledgeMessage call per message). With `--against nats`, the same mailbox workload on
//! NATS JetStream in the same run (see [`super::nats`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_wire::cohort::client_frame::Frame;
use cohort_wire::cohort::mailbox_client::MailboxClient;
use cohort_wire::cohort::server_frame::Frame as Pushed;
use cohort_wire::cohort::{Ack, ClientFrame, Credit, SendBatch, SendItem, Subscribe};
use cohort_wire::router::message_router_client::MessageRouterClient;
use cohort_wire::router::{
    AcknowledgeMessageRequest, RouteMessageRequest, SubscribeMessagesRequest,
};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::nats;
use super::probe::{Probe, MIN_PAYLOAD};
use super::relay_proc::{machine_busy_s, proc_usage, ProcUsage, Target};
use super::report::{self, Latency, Series, Table};
use super::wire_client::{self, failed, Credential};
use super::{Durability, OutputOpts, RelayOpts};

/// Default message count when neither --count nor --duration is given.
const DEFAULT_COUNT: u64 = 20_000;
/// How long a run waits for the last acknowledgements without any progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Lifetime of the bench's sessions: long enough for any run.
pub const SESSION_TTL: Duration = Duration::from_secs(6 * 3600);

#[derive(clap::Args)]
pub struct RouteArgs {
    /// Sending parties, each one task with its own connection.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Receiving parties, each with its own connection and subscription.
    #[arg(long, default_value_t = 4)]
    receivers: usize,
    /// Payload bytes per message (at least 8: the send timestamp rides in the first 8).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Messages to send in total [default: 20000 unless --duration is given].
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Send for this many seconds instead of a fixed count.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Which API the parties use: the streaming mailbox (what the SDK uses) or the unary
    /// router calls.
    #[arg(long, value_enum, default_value_t = Api::Stream)]
    api: Api,
    /// Messages in flight per sender: RouteMessage calls (router), or unanswered items on
    /// the stream, sent in batches of what the window has room for (stream).
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Messages delivered and not yet acknowledged per receiver: AcknowledgeMessage calls in
    /// flight (router), or the credit window (stream). Large, so that receivers are not what
    /// limits the run.
    #[arg(long, default_value_t = 256)]
    ack_inflight: usize,
    /// Total send rate in msgs/s (open loop, spread over the senders) [default: as fast as
    /// the in-flight window allows].
    #[arg(long)]
    rate: Option<f64>,
    /// Relay durability; `both` runs the relay twice [default: full, or both with --against].
    #[arg(long, value_enum)]
    durability: Option<DurabilityChoice>,
    /// Also run the same workload on this peer and print the ratios.
    #[arg(long, value_enum)]
    against: Option<Peer>,
    /// nats-server binary [default: `nats-server` on PATH].
    #[arg(long, value_name = "PATH")]
    nats_server: Option<PathBuf>,
    #[command(flatten)]
    relay: RelayOpts,
    #[command(flatten)]
    output: OutputOpts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DurabilityChoice {
    Full,
    Normal,
    Both,
}

/// The API the bench's parties speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// `cohort.v1.Mailbox`: one bidirectional stream per party.
    Stream,
    /// `mpc.router.v1.MessageRouter`: unary RouteMessage and AcknowledgeMessage, and
    /// SubscribeMessages.
    Router,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Stream => "stream",
            Api::Router => "router",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Peer {
    /// NATS JetStream (a file-backed R1 stream, durable pull consumers, explicit ack).
    Nats,
}

/// How much to send.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    Count(u64),
    Duration(Duration),
}

/// The workload's parameters, shared by the Cohort and NATS drivers.
#[derive(Clone, Debug)]
pub struct Shape {
    pub senders: usize,
    pub receivers: usize,
    pub payload: usize,
    pub load: Load,
    pub inflight: usize,
    pub ack_inflight: usize,
    pub rate: Option<f64>,
}

impl Shape {
    /// Messages sender `i` sends in a count run.
    pub fn share_of(&self, i: usize, total: u64) -> u64 {
        let s = self.senders as u64;
        total / s + u64::from((i as u64) < total % s)
    }

    /// When sender `i` sends its `k`-th message, relative to the start (open loop only).
    pub fn due(&self, k: u64) -> Option<Duration> {
        let per_sender = self.rate? / self.senders as f64;
        Some(Duration::from_secs_f64(k as f64 / per_sender))
    }

    /// Whether sender `i` sends a `k`-th message.
    pub fn more(&self, i: usize, k: u64, probe: &Probe) -> bool {
        match self.load {
            Load::Count(n) => k < self.share_of(i, n),
            Load::Duration(d) => probe.elapsed() < d,
        }
    }

    pub fn json(&self) -> Value {
        let mut v = json!({
            "senders": self.senders,
            "receivers": self.receivers,
            "payload_bytes": self.payload,
            "inflight_per_sender": self.inflight,
            "ack_inflight_per_receiver": self.ack_inflight,
            "rate_msgs_per_s": self.rate,
        });
        match self.load {
            Load::Count(n) => v["count"] = json!(n),
            Load::Duration(d) => v["duration_s"] = json!(d.as_secs_f64()),
        }
        v
    }

    pub fn describe(&self) -> String {
        let load = match self.load {
            Load::Count(n) => format!("count={n}"),
            Load::Duration(d) => format!("duration={}s", d.as_secs_f64()),
        };
        let rate = match self.rate {
            Some(r) => format!(" rate={r}/s (open loop)"),
            None => String::new(),
        };
        format!(
            "senders={} receivers={} payload={} B {load} inflight={}/sender acks-inflight={}/receiver{rate}",
            self.senders, self.receivers, self.payload, self.inflight, self.ack_inflight
        )
    }
}

/// One measured run of the workload on one system.
pub struct Outcome {
    /// "cohort" or "nats".
    pub system: &'static str,
    /// "durability=full", "sync_interval=always", ...
    pub setting: String,
    /// Messages delivered and acknowledged.
    pub messages: u64,
    /// From the first send to the last acknowledgement.
    pub seconds: f64,
    pub latency: Histogram<u64>,
    pub throughput: Vec<(f64, f64)>,
    /// Server CPU seconds during the measured phase (None when not measured).
    pub server_cpu_s: Option<f64>,
    /// Server peak RSS (VmHWM) at the end of the run.
    pub server_peak_rss: Option<u64>,
    /// CPU seconds of this process (the load generator) during the measured phase: on a
    /// small machine it competes with the server for the same cores.
    pub client_cpu_s: Option<f64>,
    /// CPU seconds the whole machine was busy during the measured phase.
    pub machine_cpu_s: Option<f64>,
    /// Setting up parties, sessions and streams, before the measured phase.
    pub setup_s: f64,
    /// When this run is the median of several: every run's msgs/s, ascending.
    pub all_rates: Vec<f64>,
}

impl Outcome {
    pub fn label(&self) -> String {
        format!("{} {}", self.system, self.setting)
    }

    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.messages as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// CPU seconds that neither the server nor the bench used: other processes.
    pub fn other_cpu_s(&self) -> Option<f64> {
        Some((self.machine_cpu_s? - self.server_cpu_s? - self.client_cpu_s?).max(0.0))
    }

    pub fn cpu_per_100k(&self) -> Option<f64> {
        let cpu = self.server_cpu_s?;
        (self.messages > 0).then(|| cpu * 100_000.0 / self.messages as f64)
    }

    pub fn json(&self) -> Value {
        json!({
            "system": self.system,
            "setting": self.setting,
            "messages": self.messages,
            "seconds": round3(self.seconds),
            "msgs_per_s": round3(self.rate()),
            "latency_us": Latency::of(&self.latency).json(),
            "server_cpu_s": self.server_cpu_s.map(round3),
            "server_cpu_s_per_100k": self.cpu_per_100k().map(round3),
            "server_peak_rss_bytes": self.server_peak_rss,
            "client_cpu_s": self.client_cpu_s.map(round3),
            "machine_cpu_s": self.machine_cpu_s.map(round3),
            "other_processes_cpu_s": self.other_cpu_s().map(round3),
            "setup_s": round3(self.setup_s),
            "all_runs_msgs_per_s": self.all_rates,
        })
    }

    fn row(&self) -> Vec<String> {
        let l = Latency::of(&self.latency);
        vec![
            self.system.to_string(),
            self.setting.clone(),
            self.messages.to_string(),
            report::rate(self.rate()),
            report::ms(l.p50_us),
            report::ms(l.p95_us),
            report::ms(l.p99_us),
            report::ms(l.max_us),
            self.cpu_per_100k()
                .map(|c| format!("{c:.2} s"))
                .unwrap_or_else(|| "n/a".into()),
            self.server_peak_rss
                .map(report::mib)
                .unwrap_or_else(|| "n/a".into()),
            self.client_cpu_s
                .filter(|_| self.messages > 0)
                .map(|c| format!("{:.2} s", c * 100_000.0 / self.messages as f64))
                .unwrap_or_else(|| "n/a".into()),
            self.other_cpu_s()
                .filter(|_| self.seconds > 0.0)
                .map(|c| format!("{:.2}", c / self.seconds))
                .unwrap_or_else(|| "n/a".into()),
        ]
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub async fn run(a: RouteArgs) -> Result<(), String> {
    let shape = shape_of(&a)?;
    let attached = a.relay.relay.is_some();
    let durabilities: Vec<Durability> = match (a.durability, a.against) {
        (Some(DurabilityChoice::Full), _) => vec![Durability::Full],
        (Some(DurabilityChoice::Normal), _) => vec![Durability::Normal],
        (Some(DurabilityChoice::Both), _) | (None, Some(Peer::Nats)) => {
            vec![Durability::Full, Durability::Normal]
        }
        (None, None) => vec![Durability::Full],
    };
    // An attached relay has whatever durability it was started with: run it once.
    let durabilities = if attached {
        vec![durabilities[0]]
    } else {
        durabilities
    };
    println!(
        "cohort bench route: {} api={}",
        shape.describe(),
        a.api.as_str()
    );
    let mut notes = Vec::new();
    let mut outcomes = Vec::new();
    for d in durabilities {
        let target = Target::open(&a.relay, d).await?;
        println!("{}", target.describe());
        let result = drive_cohort(&target, &shape, a.api).await;
        target.stop().await;
        outcomes.push(result?);
    }
    if attached {
        notes.push("relay CPU and RSS not measured: the bench attached to a relay it did not start (--relay)".to_string());
    }
    if a.against == Some(Peer::Nats) {
        match nats::find_server(a.nats_server.as_deref()) {
            Ok(bin) => {
                for sync in [nats::SyncInterval::Default, nats::SyncInterval::Always] {
                    outcomes.push(nats::drive(&bin, &shape, sync).await?);
                }
                notes.push(nats::COMPARABLE.to_string());
            }
            Err(missing) => {
                println!("{missing}");
                notes.push(missing);
            }
        }
    }

    let mut table = Table::new(
        format!("route: {} api={}", shape.describe(), a.api.as_str()),
        &[
            "system",
            "setting",
            "msgs",
            "acked/s",
            "p50",
            "p95",
            "p99",
            "max",
            "srv CPU/100k",
            "srv peak RSS",
            "bench CPU/100k",
            "others (cores)",
        ],
    );
    for o in &outcomes {
        table.row(o.row());
    }
    table.print();
    let ratios = ratios(&outcomes);
    if !ratios.is_empty() {
        println!(
            "\nCohort / NATS (throughput: higher is better for Cohort; p99 and CPU: lower is)"
        );
        for r in &ratios {
            println!(
                "  {} vs {}: throughput {:.2}x, p99 {:.2}x, server CPU per message {}",
                r["cohort"].as_str().unwrap_or_default(),
                r["nats"].as_str().unwrap_or_default(),
                r["throughput"].as_f64().unwrap_or(0.0),
                r["p99"].as_f64().unwrap_or(0.0),
                r["cpu_per_100k"]
                    .as_f64()
                    .map(|c| format!("{c:.2}x"))
                    .unwrap_or_else(|| "n/a".into())
            );
        }
    }
    for o in &outcomes {
        if let Some(w) = disturbed(o.other_cpu_s(), o.seconds) {
            notes.push(format!("{}: {w}", o.label()));
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    if let Some(path) = &a.output.json {
        let v = json!({
            "workload": "route",
            "parameters": {
                "shape": shape.json(),
                "api": a.api.as_str(),
                "relay": if attached { a.relay.relay.clone().unwrap_or_default() } else { "spawned".to_string() },
                "against": a.against.map(|_| "nats"),
            },
            "runs": outcomes.iter().map(Outcome::json).collect::<Vec<_>>(),
            "ratios": ratios,
            "notes": notes,
        });
        report::write_json(path, &v)?;
    }
    if let Some(path) = &a.output.plot {
        let series: Vec<Series<'_>> = outcomes
            .iter()
            .map(|o| Series {
                label: o.label(),
                latency: &o.latency,
                throughput: &o.throughput,
            })
            .collect();
        report::plot(
            path,
            &format!("cohort bench route: {}", shape.describe()),
            &series,
        )?;
    }
    Ok(())
}

fn shape_of(a: &RouteArgs) -> Result<Shape, String> {
    if a.senders == 0 || a.receivers == 0 {
        return Err("--senders and --receivers must be at least 1".into());
    }
    if a.senders + a.receivers > 1000 {
        return Err(
            "--senders plus --receivers is at most 1000 (the relay's max_session_parties)".into(),
        );
    }
    if a.payload < MIN_PAYLOAD {
        return Err(format!(
            "--payload {} is too small: the first {MIN_PAYLOAD} bytes carry the send time",
            a.payload
        ));
    }
    if a.inflight == 0 || a.ack_inflight == 0 {
        return Err("--inflight and --ack-inflight must be at least 1".into());
    }
    if let Some(r) = a.rate {
        if r.is_nan() || r <= 0.0 {
            return Err("--rate must be a positive number of messages per second".into());
        }
    }
    let load = match (a.count, a.duration) {
        (Some(0), _) => return Err("--count must be at least 1".into()),
        (Some(n), _) => Load::Count(n),
        (None, Some(d)) if d > 0.0 && d.is_finite() => Load::Duration(Duration::from_secs_f64(d)),
        (None, Some(_)) => return Err("--duration must be a positive number of seconds".into()),
        (None, None) => Load::Count(DEFAULT_COUNT),
    };
    Ok(Shape {
        senders: a.senders,
        receivers: a.receivers,
        payload: a.payload,
        load,
        inflight: a.inflight,
        ack_inflight: a.ack_inflight,
        rate: a.rate,
    })
}

/// Cohort row vs the NATS row of comparable durability.
fn ratios(outcomes: &[Outcome]) -> Vec<Value> {
    let pairs = [
        ("durability=full", nats::SyncInterval::Always.setting()),
        ("durability=normal", nats::SyncInterval::Default.setting()),
        ("attached", nats::SyncInterval::Always.setting()),
    ];
    let mut out = Vec::new();
    for (c, n) in pairs {
        let cohort = outcomes
            .iter()
            .find(|o| o.system == "cohort" && o.setting == c);
        let peer = outcomes
            .iter()
            .find(|o| o.system == "nats" && o.setting == n);
        let (Some(c), Some(n)) = (cohort, peer) else {
            continue;
        };
        let p99 = |o: &Outcome| Latency::of(&o.latency).p99_us.max(1) as f64;
        out.push(json!({
            "cohort": c.label(),
            "nats": n.label(),
            "throughput": round3(c.rate() / n.rate().max(f64::MIN_POSITIVE)),
            "p99": round3(p99(c) / p99(n)),
            "cpu_per_100k": match (c.cpu_per_100k(), n.cpu_per_100k()) {
                (Some(a), Some(b)) if b > 0.0 => Some(round3(a / b)),
                _ => None,
            },
        }));
    }
    out
}

/// Runs the workload once on a Cohort relay over `api`: fresh parties, one session,
/// receivers subscribed before the first send.
pub async fn drive_cohort(target: &Target, shape: &Shape, api: Api) -> Result<Outcome, String> {
    let setting = match target.durability {
        Some(d) => format!("durability={}", d.as_str()),
        None => "attached".to_string(),
    };
    let setup = Instant::now();
    let coordinator_channel = wire_client::connect(&target.url).await?;
    let coordinator =
        wire_client::login_coordinator(&coordinator_channel, &target.coordinator).await?;
    let prefix = wire_client::run_prefix();
    let ids: Vec<String> = (0..shape.senders)
        .map(|i| format!("{prefix}-s{i}"))
        .chain((0..shape.receivers).map(|i| format!("{prefix}-r{i}")))
        .collect();
    // One connection per party, as separate clients would have.
    let channels = wire_client::connect_many(&target.url, ids.len()).await?;
    let creds = wire_client::enroll(
        &channels,
        &coordinator,
        ids.clone(),
        false,
        16,
        Arc::new(|| {}),
    )
    .await?;
    let session =
        wire_client::create_session(&coordinator_channel, &coordinator, ids, SESSION_TTL).await?;
    for (cred, ch) in creds.iter().zip(&channels) {
        wire_client::join(ch, cred, &session).await?;
    }
    let (senders, receivers) = creds.split_at(shape.senders);
    let (sender_channels, receiver_channels) = channels.split_at(shape.senders);
    let mut streams = Vec::with_capacity(receivers.len());
    let mut mailboxes = Vec::with_capacity(receivers.len());
    for (cred, ch) in receivers.iter().zip(receiver_channels) {
        match api {
            Api::Router => {
                let stream = MessageRouterClient::new(ch.clone())
                    .subscribe_messages(cred.request(SubscribeMessagesRequest {
                        session_id: session.id.clone(),
                        party_id: cred.party_id.clone(),
                    }))
                    .await
                    .map_err(|s| failed(&format!("SubscribeMessages of {}", cred.party_id), &s))?
                    .into_inner();
                streams.push(stream);
            }
            Api::Stream => {
                let window = u32::try_from(shape.ack_inflight).unwrap_or(u32::MAX);
                let mailbox = MailboxStream::open(ch, cred).await?;
                mailbox.put(Frame::Subscribe(Subscribe {
                    session_id: session.id.clone(),
                    party_id: cred.party_id.clone(),
                    after_seq: 0,
                    credit: window,
                    subscription_id: 1,
                }));
                mailboxes.push(mailbox);
            }
        }
    }
    let mut sender_mailboxes = Vec::with_capacity(senders.len());
    if api == Api::Stream {
        for (cred, ch) in senders.iter().zip(sender_channels) {
            sender_mailboxes.push(MailboxStream::open(ch, cred).await?);
        }
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let before = target.usage();
    let client_before = own_usage();
    let machine_before = machine_busy_s();
    let probe = Arc::new(Probe::new());
    let pb = progress(shape, &format!("cohort {setting}"));
    let ticker = tick_progress(pb.clone(), probe.clone());

    let mut receiver_tasks = JoinSet::new();
    for ((cred, ch), stream) in receivers.iter().zip(receiver_channels).zip(streams) {
        receiver_tasks.spawn(receive(
            probe.clone(),
            MessageRouterClient::new(ch.clone()),
            cred.clone(),
            session.id.clone(),
            stream,
            shape.ack_inflight,
        ));
    }
    for (cred, mailbox) in receivers.iter().zip(mailboxes) {
        receiver_tasks.spawn(receive_stream(
            probe.clone(),
            cred.party_id.clone(),
            session.id.clone(),
            mailbox,
        ));
    }
    let recipients: Arc<Vec<String>> =
        Arc::new(receivers.iter().map(|c| c.party_id.clone()).collect());
    let mut sender_tasks = JoinSet::new();
    match api {
        Api::Router => {
            for (i, (cred, ch)) in senders.iter().zip(sender_channels).enumerate() {
                sender_tasks.spawn(send(
                    i,
                    shape.clone(),
                    probe.clone(),
                    MessageRouterClient::new(ch.clone()),
                    cred.clone(),
                    session.id.clone(),
                    recipients.clone(),
                ));
            }
        }
        Api::Stream => {
            for (i, mailbox) in sender_mailboxes.into_iter().enumerate() {
                sender_tasks.spawn(send_stream(
                    i,
                    shape.clone(),
                    probe.clone(),
                    mailbox,
                    session.id.clone(),
                    recipients.clone(),
                ));
            }
        }
    }
    let mut sent = 0u64;
    while let Some(r) = sender_tasks.join_next().await {
        sent += r.map_err(|e| format!("a sender task failed: {e}"))?;
    }
    let waited = probe.wait_for_acks(sent, DRAIN_TIMEOUT).await;
    let after = target.usage();
    let client_after = own_usage();
    let machine_after = machine_busy_s();
    ticker.abort();
    pb.finish_and_clear();
    receiver_tasks.abort_all();
    let seconds = waited?.as_secs_f64();
    if let Some(e) = probe.error() {
        return Err(e);
    }
    Ok(Outcome {
        system: "cohort",
        setting,
        messages: probe.acked_count(),
        seconds,
        latency: probe.latency(),
        throughput: probe.throughput_over_time(),
        server_cpu_s: cpu_between(before, after),
        server_peak_rss: after.map(|a| a.peak_rss_bytes),
        client_cpu_s: cpu_between(client_before, client_after),
        machine_cpu_s: machine_after.zip(machine_before).map(|(a, b)| a - b),
        setup_s,
        all_rates: Vec::new(),
    })
}

/// A warning when other processes took more than a tenth of a core during a run.
pub fn disturbed(other_cpu_s: Option<f64>, seconds: f64) -> Option<String> {
    let cores = other_cpu_s? / seconds.max(1e-9);
    (cores > 0.1).then(|| {
        format!("other processes used {cores:.2} cores during the run; its figures are disturbed, rerun on a quiet machine")
    })
}

/// CPU time and memory of this process (the load generator).
pub fn own_usage() -> Option<ProcUsage> {
    proc_usage(std::process::id())
}

/// CPU seconds spent between two readings.
pub fn cpu_between(before: Option<ProcUsage>, after: Option<ProcUsage>) -> Option<f64> {
    Some(after?.cpu_s - before?.cpu_s)
}

/// One sender: RouteMessage to the receivers round-robin, `inflight` calls at a time.
/// Returns how many messages the relay accepted.
async fn send(
    index: usize,
    shape: Shape,
    probe: Arc<Probe>,
    router: MessageRouterClient<tonic::transport::Channel>,
    cred: Credential,
    session_id: String,
    recipients: Arc<Vec<String>>,
) -> u64 {
    let mut inflight = JoinSet::new();
    let mut accepted = 0u64;
    let mut k = 0u64;
    let start = tokio::time::Instant::now();
    while shape.more(index, k, &probe) && probe.error().is_none() {
        while inflight.len() >= shape.inflight {
            if let Some(r) = inflight.join_next().await {
                accepted += u64::from(matches!(r, Ok(true)));
            }
        }
        if let Some(due) = shape.due(k) {
            tokio::time::sleep_until(start + due).await;
        }
        let to = recipients[(index + k as usize) % recipients.len()].clone();
        let req = cred.request(RouteMessageRequest {
            session_id: session_id.clone(),
            from_party: cred.party_id.clone(),
            to_parties: vec![to],
            round_number: 1,
            message_type: "bench".into(),
            payload: probe.stamped_payload(shape.payload),
        });
        let mut router = router.clone();
        let probe = probe.clone();
        inflight.spawn(async move {
            match router.route_message(req).await {
                Ok(_) => true,
                Err(s) => {
                    probe.fail(failed("RouteMessage", &s));
                    false
                }
            }
        });
        k += 1;
    }
    while let Some(r) = inflight.join_next().await {
        accepted += u64::from(matches!(r, Ok(true)));
    }
    accepted
}

/// One receiver: reads its stream, records latency, acknowledges each message with up to
/// `inflight` AcknowledgeMessage calls in flight.
async fn receive(
    probe: Arc<Probe>,
    router: MessageRouterClient<tonic::transport::Channel>,
    cred: Credential,
    session_id: String,
    mut stream: tonic::Streaming<cohort_wire::router::MpcMessage>,
    inflight: usize,
) {
    let window = Arc::new(Semaphore::new(inflight.max(1)));
    loop {
        let m = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                probe.fail(format!(
                    "the relay ended the message stream of {}",
                    cred.party_id
                ));
                return;
            }
            Err(s) => {
                probe.fail(failed(
                    &format!("SubscribeMessages of {}", cred.party_id),
                    &s,
                ));
                return;
            }
        };
        probe.received(&m.payload);
        let Ok(permit) = window.clone().acquire_owned().await else {
            return;
        };
        let req = cred.request(AcknowledgeMessageRequest {
            message_id: m.message_id,
            party_id: cred.party_id.clone(),
            session_id: session_id.clone(),
            success: true,
            error_message: String::new(),
        });
        let mut router = router.clone();
        let probe = probe.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match router.acknowledge_message(req).await {
                Ok(_) => probe.acked(),
                Err(s) => probe.fail(failed("AcknowledgeMessage", &s)),
            }
        });
    }
}

/// One party's `cohort.v1.Mailbox` stream.
pub struct MailboxStream {
    party_id: String,
    out: mpsc::UnboundedSender<ClientFrame>,
    inbound: tonic::Streaming<cohort_wire::cohort::ServerFrame>,
    next_request: u64,
}

impl MailboxStream {
    pub async fn open(
        channel: &tonic::transport::Channel,
        cred: &Credential,
    ) -> Result<MailboxStream, String> {
        let (out, rx) = mpsc::unbounded_channel();
        let inbound = MailboxClient::new(channel.clone())
            .open(cred.request(UnboundedReceiverStream::new(rx)))
            .await
            .map_err(|s| failed(&format!("Mailbox/Open of {}", cred.party_id), &s))?
            .into_inner();
        Ok(MailboxStream {
            party_id: cred.party_id.clone(),
            out,
            inbound,
            next_request: 0,
        })
    }

    fn put(&self, frame: Frame) {
        // A closed stream shows up as an error on `inbound`.
        let _ = self.out.send(ClientFrame { frame: Some(frame) });
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// The next frame, or a line that says why there is none.
    async fn pushed(&mut self) -> Result<Pushed, String> {
        match self.inbound.message().await {
            Ok(Some(f)) => f.frame.ok_or_else(|| {
                format!("an empty frame on the mailbox stream of {}", self.party_id)
            }),
            Ok(None) => Err(format!(
                "the relay ended the mailbox stream of {}",
                self.party_id
            )),
            Err(s) => Err(failed(&format!("Mailbox stream of {}", self.party_id), &s)),
        }
    }
}

/// One sender on the mailbox stream: keeps up to `inflight` messages unanswered, sending
/// what the window has room for as one batch. Returns how many messages the relay accepted.
async fn send_stream(
    index: usize,
    shape: Shape,
    probe: Arc<Probe>,
    mut mailbox: MailboxStream,
    session_id: String,
    recipients: Arc<Vec<String>>,
) -> u64 {
    /// Most items in one SendBatch (the relay's default stream_batch).
    const BATCH: usize = 256;
    let mut batches: HashMap<u64, usize> = HashMap::new();
    let mut inflight = 0usize;
    let mut accepted = 0u64;
    let mut k = 0u64;
    let start = tokio::time::Instant::now();
    loop {
        let mut next_due = None;
        let room = shape.inflight.saturating_sub(inflight);
        if room > 0 && probe.error().is_none() {
            let mut items = Vec::new();
            while items.len() < room.min(BATCH) && shape.more(index, k, &probe) {
                if let Some(due) = shape.due(k) {
                    if start + due > tokio::time::Instant::now() {
                        next_due = Some(start + due);
                        break;
                    }
                }
                let to = recipients[(index + k as usize) % recipients.len()].clone();
                items.push(SendItem {
                    client_id: format!("{index}-{k}"),
                    session_id: session_id.clone(),
                    to_parties: vec![to],
                    round: 1,
                    message_type: "bench".into(),
                    payload: probe.stamped_payload(shape.payload),
                });
                k += 1;
            }
            if !items.is_empty() {
                let request_id = mailbox.request_id();
                inflight += items.len();
                batches.insert(request_id, items.len());
                mailbox.put(Frame::Send(SendBatch { request_id, items }));
            }
        }
        let done = !shape.more(index, k, &probe) || probe.error().is_some();
        if inflight == 0 && (done || next_due.is_none()) {
            return accepted;
        }
        let pushed = tokio::select! {
            p = mailbox.pushed(), if inflight > 0 => p,
            _ = sleep_until(next_due) => continue,
        };
        match pushed {
            Ok(Pushed::SendResult(r)) => {
                inflight -= batches.remove(&r.request_id).unwrap_or(0);
                for o in r.outcomes {
                    match o.failure {
                        None => accepted += 1,
                        Some(f) => probe.fail(format!(
                            "a streamed send was refused: code {}: {}",
                            f.code, f.message
                        )),
                    }
                }
            }
            Ok(other) => probe.fail(format!("unexpected frame on a sender's stream: {other:?}")),
            Err(e) => {
                probe.fail(e);
                return accepted;
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One receiver on the mailbox stream: records each delivery's latency, acknowledges each
/// delivery with one cumulative ack, and grants the credit back once the ack is committed.
async fn receive_stream(
    probe: Arc<Probe>,
    party_id: String,
    session_id: String,
    mut mailbox: MailboxStream,
) {
    let mut acks: HashMap<u64, u32> = HashMap::new();
    loop {
        match mailbox.pushed().await {
            Ok(Pushed::Delivery(d)) => {
                let Some(last) = d.messages.last().map(|m| m.seq) else {
                    continue;
                };
                for m in &d.messages {
                    probe.received(&m.payload);
                }
                let request_id = mailbox.request_id();
                acks.insert(request_id, d.messages.len() as u32);
                mailbox.put(Frame::Ack(Ack {
                    request_id,
                    session_id: session_id.clone(),
                    up_to_seq: last,
                }));
            }
            Ok(Pushed::AckResult(r)) => {
                let n = acks.remove(&r.request_id).unwrap_or(0);
                for _ in 0..n {
                    probe.acked();
                }
                mailbox.put(Frame::Credit(Credit {
                    session_id: session_id.clone(),
                    n,
                }));
            }
            Ok(other) => {
                probe.fail(format!(
                    "unexpected frame on the stream of {party_id}: {other:?}"
                ));
                return;
            }
            Err(e) => {
                probe.fail(e);
                return;
            }
        }
    }
}

/// The progress bar of one run: messages in a count run, a spinner in a duration run.
pub fn progress(shape: &Shape, label: &str) -> indicatif::ProgressBar {
    match shape.load {
        Load::Count(n) => report::bar(Some(n), label),
        Load::Duration(_) => report::bar(None, label),
    }
}

/// Keeps the bar at the acknowledged count until aborted.
pub fn tick_progress(pb: indicatif::ProgressBar, probe: Arc<Probe>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            pb.set_position(probe.acked_count());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
