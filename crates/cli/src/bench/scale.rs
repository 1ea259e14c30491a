//! `cohort bench scale`: how the relay's cost grows.
//!
//! 1. Subscribers: C parties, each with its own SubscribeMessages stream (many streams per
//!    HTTP/2 connection), in sessions of `--session-size`; a steady open-loop send rate across
//!    them. Reports relay RSS per stream and end-to-end latency under that load.
//! 2. Depth: send+ack throughput (the `route` workload, fresh session, 2 senders, 2
//!    receivers) with nothing queued, then again after N messages were queued for offline
//!    parties that never subscribe. The cost must not grow with depth.
//!
//! Each part runs on its own freshly spawned relay (unless `--relay` attaches to one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_wire::router::message_router_client::MessageRouterClient;
use cohort_wire::router::{
    AcknowledgeMessageRequest, MpcMessage, RouteMessageRequest, SubscribeMessagesRequest,
};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::probe::{Probe, MIN_PAYLOAD};
use super::relay_proc::{machine_busy_s, Target};
use super::report::{self, Latency, Series, Table};
use super::route::{self, round3, Load, Outcome, Shape, SESSION_TTL};
use super::wire_client::{self, failed, CreatedSession, Credential};
use super::{Durability, OutputOpts, RelayOpts};

/// Connections used for setup calls and for the load's RouteMessage calls.
const CALL_CONNECTIONS: usize = 8;
/// RouteMessage calls in flight while filling the queue.
const FILL_INFLIGHT: usize = 256;
/// Most sends the steady load keeps open before it falls behind its schedule.
const MAX_OUTSTANDING: usize = 8192;

#[derive(clap::Args)]
pub struct ScaleArgs {
    /// Concurrently subscribed parties, each with its own SubscribeMessages stream (0 skips
    /// this part).
    #[arg(long, default_value_t = 10_000)]
    parties: usize,
    /// Parties per session (the relay allows at most 1000; every join is announced to every
    /// participant, so large sessions make the setup quadratic).
    #[arg(long, default_value_t = 10)]
    session_size: usize,
    /// SubscribeMessages streams per HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    streams_per_connection: usize,
    /// Steady send rate across the parties, msgs/s (open loop).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seconds of steady load.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    duration: f64,
    /// Messages queued for offline parties before the second throughput probe (0 skips the
    /// depth part).
    #[arg(long, default_value_t = 1_000_000)]
    depth: u64,
    /// Offline parties the queued messages are spread over (a mailbox holds at most
    /// 1,000,000 unacknowledged messages by default).
    #[arg(long, default_value_t = 4)]
    offline_parties: usize,
    /// Messages per send+ack probe [default: 10000, or the depth when smaller, at least 200].
    #[arg(long)]
    probe_count: Option<u64>,
    /// Probes before and after filling; the median (by throughput) of each side is reported.
    #[arg(long, default_value_t = 3)]
    probe_runs: usize,
    /// Payload bytes per message (at least 8).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Concurrent calls while logging parties in, joining and subscribing.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Relay durability.
    #[arg(long, value_enum, default_value = "full")]
    durability: Durability,
    #[command(flatten)]
    relay: RelayOpts,
    #[command(flatten)]
    output: OutputOpts,
}

pub async fn run(a: ScaleArgs) -> Result<(), String> {
    check(&a)?;
    println!(
        "cohort bench scale: parties={} session_size={} streams_per_connection={} rate={}/s duration={}s depth={} offline_parties={} payload={} B durability={}",
        a.parties,
        a.session_size,
        a.streams_per_connection,
        a.rate,
        a.duration,
        a.depth,
        a.offline_parties,
        a.payload,
        a.durability.as_str()
    );
    let mut notes = Vec::new();
    if a.relay.relay.is_some() {
        notes.push("relay CPU and RSS not measured: the bench attached to a relay it did not start (--relay)".to_string());
    }
    let mut out = json!({
        "workload": "scale",
        "parameters": {
            "parties": a.parties,
            "probe_runs": a.probe_runs,
            "session_size": a.session_size,
            "streams_per_connection": a.streams_per_connection,
            "rate_msgs_per_s": a.rate,
            "duration_s": a.duration,
            "depth": a.depth,
            "offline_parties": a.offline_parties,
            "payload_bytes": a.payload,
            "durability": a.durability.as_str(),
            "relay": a.relay.relay.clone().unwrap_or_else(|| "spawned".into()),
        },
    });
    let mut subscribers = None;
    if a.parties > 0 {
        let target = Target::open(&a.relay, a.durability).await?;
        println!("{}", target.describe());
        let r = run_subscribers(&target, &a).await;
        target.stop().await;
        let r = r?;
        r.table().print();
        out["subscribers"] = r.json();
        subscribers = Some(r);
    }
    let mut depth = None;
    if a.depth > 0 {
        let target = Target::open(&a.relay, a.durability).await?;
        println!("{}", target.describe());
        let r = run_depth(&target, &a).await;
        target.stop().await;
        let r = r?;
        r.table().print();
        println!(
            "probe runs, msgs/s (the median is shown): empty {:?}, deep {:?}",
            r.empty.all_rates, r.deep.all_rates
        );
        out["depth"] = r.json();
        depth = Some(r);
    }
    if let Some(s) = &subscribers {
        if let Some(w) = route::disturbed(s.other_cpu_s, s.seconds) {
            notes.push(format!("subscribers: {w}"));
        }
    }
    if let Some(d) = &depth {
        for (name, o) in [("depth, empty", &d.empty), ("depth, deep", &d.deep)] {
            if let Some(w) = route::disturbed(o.other_cpu_s(), o.seconds) {
                notes.push(format!("{name}: {w}"));
            }
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    out["notes"] = json!(notes);
    if let Some(path) = &a.output.json {
        report::write_json(path, &out)?;
    }
    if let Some(path) = &a.output.plot {
        let mut series = Vec::new();
        if let Some(s) = &subscribers {
            series.push(Series {
                label: format!("{} subscribers at {}/s", s.parties, a.rate),
                latency: &s.latency,
                throughput: &s.throughput,
            });
        }
        if let Some(d) = &depth {
            for o in [&d.empty, &d.deep] {
                series.push(Series {
                    label: format!(
                        "send+ack, {} queued",
                        if std::ptr::eq(o, &d.empty) {
                            0
                        } else {
                            d.queued
                        }
                    ),
                    latency: &o.latency,
                    throughput: &o.throughput,
                });
            }
        }
        report::plot(path, "cohort bench scale", &series)?;
    }
    Ok(())
}

fn check(a: &ScaleArgs) -> Result<(), String> {
    if a.parties > 0 && !(2..=1000).contains(&a.session_size) {
        return Err("--session-size must be between 2 and 1000".into());
    }
    if a.parties == 1 {
        return Err(
            "--parties must be 0 (skip) or at least 2: a message needs a sender and a receiver"
                .into(),
        );
    }
    if a.streams_per_connection == 0 || a.parallel == 0 {
        return Err("--streams-per-connection and --parallel must be at least 1".into());
    }
    if a.parties > 0
        && (a.rate.is_nan() || a.rate <= 0.0 || a.duration.is_nan() || a.duration <= 0.0)
    {
        return Err("--rate and --duration must be positive".into());
    }
    if a.payload < MIN_PAYLOAD {
        return Err(format!(
            "--payload must be at least {MIN_PAYLOAD} bytes (the send time)"
        ));
    }
    if a.depth > 0 && a.probe_runs == 0 {
        return Err("--probe-runs must be at least 1".into());
    }
    if a.depth > 0 {
        if a.offline_parties == 0 || a.offline_parties > 999 {
            return Err("--offline-parties must be between 1 and 999".into());
        }
        let per_mailbox = a.depth.div_ceil(a.offline_parties as u64);
        if per_mailbox > 1_000_000 {
            return Err(format!(
                "--depth {} over {} offline parties is {per_mailbox} per mailbox; the relay caps a mailbox at 1,000,000: raise --offline-parties",
                a.depth, a.offline_parties
            ));
        }
    }
    Ok(())
}

// ---- part 1: many subscribers ---------------------------------------------------------

struct Subscribers {
    parties: usize,
    sessions: usize,
    connections: usize,
    rate_target: f64,
    duration_s: f64,
    sent: u64,
    messages: u64,
    seconds: f64,
    latency: hdrhistogram::Histogram<u64>,
    throughput: Vec<(f64, f64)>,
    rss_before: Option<u64>,
    rss_idle: Option<u64>,
    peak_rss: Option<u64>,
    cpu_s: Option<f64>,
    /// CPU seconds other processes (neither relay nor bench) used during the load.
    other_cpu_s: Option<f64>,
    setup_s: f64,
    subscribe_s: f64,
}

impl Subscribers {
    fn per_stream(&self, to: Option<u64>) -> Option<f64> {
        let (b, t) = (self.rss_before?, to?);
        Some(t.saturating_sub(b) as f64 / self.parties as f64)
    }

    fn json(&self) -> Value {
        json!({
            "parties": self.parties,
            "streams": self.parties,
            "sessions": self.sessions,
            "connections": self.connections,
            "rate_target_msgs_per_s": self.rate_target,
            "rate_sent_msgs_per_s": round3(self.sent as f64 / self.duration_s),
            "duration_s": self.duration_s,
            "sent": self.sent,
            "messages": self.messages,
            "seconds": round3(self.seconds),
            "msgs_per_s": round3(self.messages as f64 / self.seconds.max(1e-9)),
            "latency_us": Latency::of(&self.latency).json(),
            "rss_before_streams_bytes": self.rss_before,
            "rss_streams_idle_bytes": self.rss_idle,
            "peak_rss_bytes": self.peak_rss,
            "rss_per_stream_bytes": self.per_stream(self.peak_rss).map(|x| x.round()),
            "idle_rss_per_stream_bytes": self.per_stream(self.rss_idle).map(|x| x.round()),
            "server_cpu_s": self.cpu_s.map(round3),
            "other_processes_cpu_s": self.other_cpu_s.map(round3),
            "setup_s": round3(self.setup_s),
            "subscribe_s": round3(self.subscribe_s),
        })
    }

    fn table(&self) -> Table {
        let l = Latency::of(&self.latency);
        let na = || "n/a".to_string();
        let mut t = Table::new(
            format!(
                "scale: {} subscribed parties ({} sessions, {} connections), {}/s for {} s",
                self.parties, self.sessions, self.connections, self.rate_target, self.duration_s
            ),
            &["figure", "value"],
        );
        let rows: Vec<(&str, String)> = vec![
            (
                "sent / target rate",
                format!(
                    "{:.0}/s / {:.0}/s",
                    self.sent as f64 / self.duration_s,
                    self.rate_target
                ),
            ),
            ("delivered+acked", self.messages.to_string()),
            ("latency p50", report::ms(l.p50_us)),
            ("latency p95", report::ms(l.p95_us)),
            ("latency p99", report::ms(l.p99_us)),
            ("latency max", report::ms(l.max_us)),
            (
                "relay RSS before streams",
                self.rss_before.map(report::mib).unwrap_or_else(na),
            ),
            (
                "relay RSS, streams idle",
                self.rss_idle.map(report::mib).unwrap_or_else(na),
            ),
            (
                "relay peak RSS",
                self.peak_rss.map(report::mib).unwrap_or_else(na),
            ),
            (
                "RSS per stream (peak)",
                self.per_stream(self.peak_rss)
                    .map(report::kib)
                    .unwrap_or_else(na),
            ),
            (
                "RSS per stream (idle)",
                self.per_stream(self.rss_idle)
                    .map(report::kib)
                    .unwrap_or_else(na),
            ),
            (
                "relay CPU during load",
                self.cpu_s.map(|c| format!("{c:.2} s")).unwrap_or_else(na),
            ),
            (
                "other processes during load",
                self.other_cpu_s
                    .map(|c| format!("{:.2} cores", c / self.seconds.max(1e-9)))
                    .unwrap_or_else(na),
            ),
            (
                "setup (login, register, sessions, join)",
                format!("{:.1} s", self.setup_s),
            ),
            (
                "subscribing all streams",
                format!("{:.1} s", self.subscribe_s),
            ),
        ];
        for (k, v) in rows {
            t.row(vec![k.to_string(), v]);
        }
        t
    }
}

async fn run_subscribers(target: &Target, a: &ScaleArgs) -> Result<Subscribers, String> {
    let setup = Instant::now();
    let calls = wire_client::connect_many(&target.url, CALL_CONNECTIONS).await?;
    let coordinator = wire_client::login_coordinator(&calls[0], &target.coordinator).await?;
    let prefix = wire_client::run_prefix();
    let ids: Vec<String> = (0..a.parties).map(|i| format!("{prefix}-p{i}")).collect();

    let pb = report::bar(Some(a.parties as u64), "enroll+login+register");
    let tick = pb.clone();
    let creds = wire_client::enroll(
        &calls,
        &coordinator,
        ids,
        false,
        a.parallel,
        Arc::new(move || tick.inc(1)),
    )
    .await;
    pb.finish_and_clear();
    let creds = Arc::new(creds?);

    // Sessions of session_size parties; a last group of one joins the one before it.
    let mut groups: Vec<Vec<usize>> = (0..a.parties)
        .collect::<Vec<_>>()
        .chunks(a.session_size)
        .map(|c| c.to_vec())
        .collect();
    if groups.len() > 1 && groups.last().map(|g| g.len()) == Some(1) {
        if let Some(last) = groups.pop() {
            if let Some(prev) = groups.last_mut() {
                prev.extend(last);
            }
        }
    }
    let pb = report::bar(Some(a.parties as u64), "sessions+join");
    let limit = Arc::new(Semaphore::new(a.parallel));
    let mut tasks = JoinSet::new();
    for (g, members) in groups.iter().enumerate() {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "setup cancelled")?;
        let channel = calls[g % calls.len()].clone();
        let coordinator = coordinator.clone();
        let creds = creds.clone();
        let members = members.clone();
        let pb = pb.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let ids = members.iter().map(|&i| creds[i].party_id.clone()).collect();
            let s = wire_client::create_session(&channel, &coordinator, ids, SESSION_TTL).await?;
            for &i in &members {
                wire_client::join(&channel, &creds[i], &s).await?;
                pb.inc(1);
            }
            Ok::<_, String>((g, s))
        });
    }
    let mut sessions: Vec<Option<CreatedSession>> = (0..groups.len()).map(|_| None).collect();
    while let Some(r) = tasks.join_next().await {
        let (g, s) = r.map_err(|e| format!("a session setup task failed: {e}"))??;
        sessions[g] = Some(s);
    }
    pb.finish_and_clear();
    let sessions: Vec<CreatedSession> = sessions.into_iter().flatten().collect();
    let setup_s = setup.elapsed().as_secs_f64();

    // Streams: one per party, `streams_per_connection` per HTTP/2 connection.
    let rss_before = target.usage().map(|u| u.rss_bytes);
    let subscribe = Instant::now();
    let connections = a.parties.div_ceil(a.streams_per_connection);
    let stream_channels = wire_client::connect_many(&target.url, connections).await?;
    let pb = report::bar(Some(a.parties as u64), "subscribe");
    let mut tasks = JoinSet::new();
    for (g, members) in groups.iter().enumerate() {
        for &i in members {
            let permit = limit
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| "setup cancelled")?;
            let channel = stream_channels[i / a.streams_per_connection].clone();
            let cred = creds[i].clone();
            let session_id = sessions[g].id.clone();
            let pb = pb.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let stream = MessageRouterClient::new(channel.clone())
                    .subscribe_messages(cred.request(SubscribeMessagesRequest {
                        session_id: session_id.clone(),
                        party_id: cred.party_id.clone(),
                    }))
                    .await
                    .map_err(|s| failed(&format!("SubscribeMessages of {}", cred.party_id), &s))?
                    .into_inner();
                pb.inc(1);
                Ok::<_, String>((channel, cred, session_id, stream))
            });
        }
    }
    let mut streams = Vec::with_capacity(a.parties);
    while let Some(r) = tasks.join_next().await {
        streams.push(r.map_err(|e| format!("a subscribe task failed: {e}"))??);
    }
    pb.finish_and_clear();
    let subscribe_s = subscribe.elapsed().as_secs_f64();
    // Let the relay settle (stream tasks parked, first empty reads done) before reading RSS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = target.usage();

    let client_before = route::own_usage();
    let machine_before = machine_busy_s();
    let probe = Arc::new(Probe::new());
    let mut receivers = JoinSet::new();
    for (channel, cred, session_id, stream) in streams {
        receivers.spawn(receive_one(
            probe.clone(),
            channel,
            cred,
            session_id,
            stream,
        ));
    }
    let duration = Duration::from_secs_f64(a.duration);
    let pb = report::bar(
        Some((a.rate * a.duration) as u64),
        &format!("load {}/s", a.rate),
    );
    let ticker = route::tick_progress(pb.clone(), probe.clone());
    let sent = steady_load(&probe, &calls, &creds, &sessions, &groups, a, duration).await;
    let waited = probe.wait_for_acks(sent, Duration::from_secs(60)).await;
    let after = target.usage();
    let client_after = route::own_usage();
    let machine_after = machine_busy_s();
    ticker.abort();
    pb.finish_and_clear();
    receivers.abort_all();
    let seconds = waited?.as_secs_f64();
    Ok(Subscribers {
        parties: a.parties,
        sessions: sessions.len(),
        connections,
        rate_target: a.rate,
        duration_s: a.duration,
        sent,
        messages: probe.acked_count(),
        seconds,
        latency: probe.latency(),
        throughput: probe.throughput_over_time(),
        rss_before,
        rss_idle: idle.map(|u| u.rss_bytes),
        peak_rss: after.map(|u| u.peak_rss_bytes),
        cpu_s: route::cpu_between(idle, after),
        other_cpu_s: machine_after
            .zip(machine_before)
            .map(|(a, b)| a - b)
            .zip(route::cpu_between(idle, after))
            .zip(route::cpu_between(client_before, client_after))
            .map(|((m, s), c)| (m - s - c).max(0.0)),
        setup_s,
        subscribe_s,
    })
}

/// A subscribed party: records latency and acknowledges each message (acks run
/// concurrently, so a party with a burst of messages is not limited by its own round trips).
async fn receive_one(
    probe: Arc<Probe>,
    channel: Channel,
    cred: Credential,
    session_id: String,
    mut stream: tonic::Streaming<MpcMessage>,
) {
    let router = MessageRouterClient::new(channel);
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
            match router.acknowledge_message(req).await {
                Ok(_) => probe.acked(),
                Err(s) => probe.fail(failed("AcknowledgeMessage", &s)),
            }
        });
    }
}

/// Sends `rate` msgs/s for `duration` on schedule (open loop): each message from a random
/// party to another random party of its session. Returns how many the relay accepted.
async fn steady_load(
    probe: &Arc<Probe>,
    calls: &[Channel],
    creds: &Arc<Vec<Credential>>,
    sessions: &[CreatedSession],
    groups: &[Vec<usize>],
    a: &ScaleArgs,
    duration: Duration,
) -> u64 {
    let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let mut issued = 0u64;
    let mut accepted = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < duration && probe.error().is_none() {
        tick.tick().await;
        let due = (start.elapsed().min(duration).as_secs_f64() * a.rate) as u64;
        while issued < due {
            let Ok(permit) = outstanding.clone().acquire_owned().await else {
                break;
            };
            let g = rng.gen_range(0..groups.len());
            let members = &groups[g];
            let from = rng.gen_range(0..members.len());
            let to = (from + rng.gen_range(1..members.len())) % members.len();
            let sender = creds[members[from]].clone();
            let req = sender.request(RouteMessageRequest {
                session_id: sessions[g].id.clone(),
                from_party: sender.party_id.clone(),
                to_parties: vec![creds[members[to]].party_id.clone()],
                round_number: 1,
                message_type: "bench".into(),
                payload: probe.stamped_payload(a.payload),
            });
            let mut router = MessageRouterClient::new(calls[issued as usize % calls.len()].clone());
            let probe = probe.clone();
            tasks.spawn(async move {
                let _permit = permit;
                match router.route_message(req).await {
                    Ok(_) => true,
                    Err(s) => {
                        probe.fail(failed("RouteMessage", &s));
                        false
                    }
                }
            });
            issued += 1;
        }
        while let Some(r) = tasks.try_join_next() {
            accepted += u64::from(matches!(r, Ok(true)));
        }
    }
    while let Some(r) = tasks.join_next().await {
        accepted += u64::from(matches!(r, Ok(true)));
    }
    accepted
}

// ---- part 2: queue depth --------------------------------------------------------------

/// Runs the send+ack probe `runs` times (each on a fresh session) and keeps the run with the
/// median throughput, so one disturbed run on a shared machine does not decide the ratio.
async fn median_probe(target: &Target, shape: &Shape, runs: usize) -> Result<Outcome, String> {
    let mut all = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        all.push(route::drive_cohort(target, shape, route::Api::Router).await?);
    }
    all.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let rates: Vec<f64> = all.iter().map(|o| round3(o.rate())).collect();
    let mut median = all.swap_remove(all.len() / 2);
    median.all_rates = rates;
    Ok(median)
}

struct Depth {
    queued: u64,
    offline_parties: usize,
    fill_s: f64,
    empty: Outcome,
    deep: Outcome,
    db_bytes: Option<u64>,
}

impl Depth {
    fn ratio(&self) -> f64 {
        self.deep.rate() / self.empty.rate().max(f64::MIN_POSITIVE)
    }

    fn json(&self) -> Value {
        let p99 = |o: &Outcome| Latency::of(&o.latency).p99_us.max(1) as f64;
        json!({
            "queued": self.queued,
            "offline_parties": self.offline_parties,
            "fill_s": round3(self.fill_s),
            "fill_msgs_per_s": round3(self.queued as f64 / self.fill_s.max(1e-9)),
            "probe": {
                "senders": 2, "receivers": 2, "messages": self.empty.messages,
            },
            "empty": self.empty.json(),
            "deep": self.deep.json(),
            "throughput_ratio_deep_over_empty": round3(self.ratio()),
            "p99_ratio_deep_over_empty": round3(p99(&self.deep) / p99(&self.empty)),
            "database_bytes": self.db_bytes,
        })
    }

    fn table(&self) -> Table {
        let mut t = Table::new(
            format!(
                "scale --depth: send+ack (2 senders, 2 receivers, fresh session) with 0 vs {} messages queued for {} offline parties",
                self.queued, self.offline_parties
            ),
            &["queued", "msgs", "acked/s", "p50", "p99", "max", "srv CPU/100k"],
        );
        for (q, o) in [(0, &self.empty), (self.queued, &self.deep)] {
            let l = Latency::of(&o.latency);
            t.row(vec![
                q.to_string(),
                o.messages.to_string(),
                report::rate(o.rate()),
                report::ms(l.p50_us),
                report::ms(l.p99_us),
                report::ms(l.max_us),
                o.cpu_per_100k()
                    .map(|c| format!("{c:.2} s"))
                    .unwrap_or_else(|| "n/a".into()),
            ]);
        }
        t.row(vec![
            "deep/empty".into(),
            String::new(),
            format!("{:.3}x", self.ratio()),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        t.row(vec![
            "fill".into(),
            self.queued.to_string(),
            report::rate(self.queued as f64 / self.fill_s.max(1e-9)),
            format!("{:.1} s", self.fill_s),
            String::new(),
            String::new(),
            self.db_bytes
                .map(|b| format!("db {}", report::mib(b)))
                .unwrap_or_default(),
        ]);
        t
    }
}

async fn run_depth(target: &Target, a: &ScaleArgs) -> Result<Depth, String> {
    let probe_count = a
        .probe_count
        .unwrap_or_else(|| a.depth.clamp(200, 10_000))
        .max(1);
    let shape = Shape {
        senders: 2,
        receivers: 2,
        payload: a.payload,
        load: Load::Count(probe_count),
        inflight: 16,
        ack_inflight: 256,
        rate: None,
    };
    let empty = median_probe(target, &shape, a.probe_runs).await?;
    let fill = Instant::now();
    fill_queue(target, a).await?;
    let fill_s = fill.elapsed().as_secs_f64();
    let deep = median_probe(target, &shape, a.probe_runs).await?;
    let db_bytes = target.data_dir().map(|d| {
        ["cohort.sqlite", "cohort.sqlite-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(d.join(f)).ok())
            .map(|m| m.len())
            .sum()
    });
    Ok(Depth {
        queued: a.depth,
        offline_parties: a.offline_parties,
        fill_s,
        empty,
        deep,
        db_bytes,
    })
}

/// Queues `depth` messages for offline parties (registered with a notification channel, so
/// their session does not stall, and never subscribed), with many RouteMessage calls in
/// flight.
async fn fill_queue(target: &Target, a: &ScaleArgs) -> Result<(), String> {
    let calls = wire_client::connect_many(&target.url, CALL_CONNECTIONS).await?;
    let coordinator = wire_client::login_coordinator(&calls[0], &target.coordinator).await?;
    let prefix = wire_client::run_prefix();
    let sender_id = format!("{prefix}-filler");
    let offline_ids: Vec<String> = (0..a.offline_parties)
        .map(|i| format!("{prefix}-offline{i}"))
        .collect();
    let sender = wire_client::enroll(
        &calls,
        &coordinator,
        vec![sender_id.clone()],
        false,
        1,
        Arc::new(|| {}),
    )
    .await?
    .remove(0);
    wire_client::enroll(
        &calls,
        &coordinator,
        offline_ids.clone(),
        true,
        a.parallel,
        Arc::new(|| {}),
    )
    .await?;
    let mut parties = vec![sender_id];
    parties.extend(offline_ids.iter().cloned());
    let session =
        wire_client::create_session(&calls[0], &coordinator, parties, SESSION_TTL).await?;
    wire_client::join(&calls[0], &sender, &session).await?;

    let probe = Probe::new();
    let pb = report::bar(Some(a.depth), "fill queue");
    let window = Arc::new(Semaphore::new(FILL_INFLIGHT));
    let error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    for k in 0..a.depth {
        if let Some(e) = error.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            pb.finish_and_clear();
            return Err(e);
        }
        let permit = window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "fill cancelled")?;
        let req = sender.request(RouteMessageRequest {
            session_id: session.id.clone(),
            from_party: sender.party_id.clone(),
            to_parties: vec![offline_ids[k as usize % offline_ids.len()].clone()],
            round_number: 1,
            message_type: "bench".into(),
            payload: probe.stamped_payload(a.payload),
        });
        let mut router = MessageRouterClient::new(calls[k as usize % calls.len()].clone());
        let error = error.clone();
        let pb = pb.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match router.route_message(req).await {
                Ok(_) => pb.inc(1),
                Err(s) => {
                    let mut e = error.lock().unwrap_or_else(|p| p.into_inner());
                    e.get_or_insert_with(|| failed("RouteMessage (filling the queue)", &s));
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    pb.finish_and_clear();
    let e = error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match e {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
