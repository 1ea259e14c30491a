//! `cohort bench sign` and `cohort bench keygen`: FROST sessions through the relay, next to
//! the same FROST work with in-process channels (the crypto-only limit), in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_client::Client;
use cohort_crypto::identity::IdentityKey;
use cohort_tss::runner::{Coordinator, Outcome, PartyNode, Traffic};
use cohort_tss::{inprocess, Curve};
use serde_json::json;

use super::probe::new_histogram;
use super::relay_proc::Target;
use super::report::{self, Latency, Table};
use super::route::{cpu_between, own_usage};
use super::{Durability, OutputOpts, RelayOpts};
use crate::threshold::{connect_party, COORDINATOR_ID};

#[derive(clap::Args)]
pub struct SignArgs {
    /// Parties holding the key (n).
    #[arg(long, default_value_t = 3)]
    n: u16,
    /// Signers per session (t).
    #[arg(long, default_value_t = 2)]
    t: u16,
    #[arg(long, default_value = "ed25519")]
    curve: Curve,
    /// Signing sessions to run.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Sessions in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, value_enum, default_value_t = Durability::Full)]
    durability: Durability,
    #[command(flatten)]
    relay: RelayOpts,
    #[command(flatten)]
    output: OutputOpts,
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    #[arg(long, default_value_t = 100)]
    n: u16,
    #[arg(long, default_value_t = 67)]
    t: u16,
    #[arg(long, default_value = "ed25519")]
    curve: Curve,
    #[arg(long, value_enum, default_value_t = Durability::Full)]
    durability: Durability,
    #[command(flatten)]
    relay: RelayOpts,
    #[command(flatten)]
    output: OutputOpts,
}

struct Fleet {
    target: Target,
    coordinator: Arc<Coordinator>,
    nodes: Vec<PartyNode>,
    names: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Starts (or attaches to) the relay and logs in `n` parties and the coordinator.
async fn fleet(
    relay: &RelayOpts,
    durability: Durability,
    n: u16,
    prefix: &str,
) -> Result<Fleet, String> {
    let target = Target::open(relay, durability).await?;
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let trusted = vec![target.coordinator.public()];
    let key = IdentityKey::from_bytes(&target.coordinator.to_bytes());
    let client = Client::connect(&target.url, COORDINATOR_ID, key)
        .await
        .map_err(|e| e.to_string())?;
    let pb = report::bar(Some(u64::from(n)), "parties enrolling and logging in");
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    // Unique per run, so an attached relay's earlier parties do not collide.
    let run = hex::encode(rand::random::<[u8; 4]>());
    for i in 1..=n {
        let name = format!("{prefix}-{run}-{i}");
        let keys = dir.path().join(format!("{name}.keys"));
        nodes.push(connect_party(&target.url, &name, &keys, &trusted, &client).await?);
        names.push(name);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let coordinator = Arc::new(Coordinator::new(
        client,
        IdentityKey::from_bytes(&target.coordinator.to_bytes()),
    ));
    Ok(Fleet {
        target,
        coordinator,
        nodes,
        names,
        _dir: dir,
    })
}

fn serve_all(
    nodes: &[PartyNode],
) -> (
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let tasks = nodes
        .iter()
        .map(|n| {
            let n = n.clone();
            let rx = rx.clone();
            tokio::spawn(async move {
                if let Err(e) = n.serve(rx).await {
                    tracing::warn!(error = %e, "party stopped");
                }
            })
        })
        .collect();
    (tx, tasks)
}

/// Runs `count` jobs on `threads` OS threads; returns the wall time.
fn parallel_blocking(
    count: usize,
    threads: usize,
    job: impl Fn(usize) -> Result<(), String> + Sync,
) -> Result<Duration, String> {
    let start = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failure = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return;
                }
                if let Err(e) = job(i) {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return;
                }
            });
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(start.elapsed()),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub async fn sign(a: SignArgs) -> Result<(), String> {
    if a.t < 2 || a.t > a.n {
        return Err(format!("--t {} must be between 2 and --n {}", a.t, a.n));
    }
    let f = fleet(&a.relay, a.durability, a.n, "signer").await?;
    let (stop, tasks) = serve_all(&f.nodes);
    let timeout = Duration::from_secs(120);
    let key = f
        .coordinator
        .keygen(&f.names, a.t, a.curve, timeout)
        .await
        .map_err(|e| format!("keygen before the signing bench failed: {e}"))?;
    let signers: Vec<String> = f.names[..usize::from(a.t)].to_vec();
    let cpu_before = f.target.usage();
    let bench_before = own_usage();
    let key_store_writes = || f.nodes.iter().map(|n| n.key_store_writes()).sum::<u64>();
    let writes_before = key_store_writes();

    let pb = report::bar(Some(a.sessions as u64), "signing sessions");
    let latencies = Arc::new(std::sync::Mutex::new(new_histogram()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (c, lat, next, pb) = (
            f.coordinator.clone(),
            latencies.clone(),
            next.clone(),
            pb.clone(),
        );
        let (gpk, signers, total, curve) = (
            key.group_public_key.clone(),
            signers.clone(),
            a.sessions,
            a.curve,
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), String>(());
                }
                let msg = format!("bench message {i}");
                let t0 = Instant::now();
                let r = c
                    .sign(
                        &gpk,
                        msg.as_bytes(),
                        "bench",
                        Some(signers.clone()),
                        timeout,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let us = t0.elapsed().as_micros() as u64;
                crate::threshold::verify_independently(curve, &gpk, &r.message_hash, &r.signature)?;
                let _ = lat
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(us.max(1));
                pb.inc(1);
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    let relay_wall = start.elapsed();
    pb.finish_and_clear();
    let cpu_after = f.target.usage();
    let bench_cpu = cpu_between(bench_before, own_usage());
    let writes_per_session = (key_store_writes() - writes_before) as f64 / a.sessions as f64;
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }

    // The same FROST work with in-process channels: one key, `sessions` signings, on as
    // many threads as there are cores, from shares loaded once (as the party nodes keep
    // theirs).
    let shares = inprocess::run_dkg(a.curve, a.n, a.t).map_err(|e| e.to_string())?;
    let signing = shares[..usize::from(a.t)]
        .iter()
        .map(|s| s.load())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let local_before = own_usage();
    let local_wall = parallel_blocking(a.sessions, cores(), |i| {
        inprocess::run_sign_loaded(&signing, format!("bench message {i}").as_bytes())
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    let local_cpu = cpu_between(local_before, own_usage());

    if let Some(p) = &a.output.plot {
        let hist = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        report::plot(
            p,
            &format!("sign: {}-of-{} {} session latency", a.t, a.n, a.curve),
            &[report::Series {
                label: "through the relay".into(),
                latency: &hist,
                throughput: &[],
            }],
        )?;
    }
    let relay_rate = a.sessions as f64 / relay_wall.as_secs_f64();
    let local_rate = a.sessions as f64 / local_wall.as_secs_f64();
    let lat = Latency::of(&latencies.lock().unwrap_or_else(|p| p.into_inner()));
    let relay_cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a2)) => Some(a2.cpu_s - b.cpu_s),
        _ => None,
    };
    let per_session_ms = |cpu: Option<f64>| {
        cpu.map(|c| format!("{:.2}", c * 1000.0 / a.sessions as f64))
            .unwrap_or_else(|| "-".into())
    };
    let mut table = Table::new(
        format!(
            "sign: {}-of-{} {} FROST, {} sessions, {} in flight; {}",
            a.t,
            a.n,
            a.curve,
            a.sessions,
            a.concurrency,
            f.target.describe()
        ),
        &[
            "path",
            "sessions/s",
            "p50",
            "p99",
            "relay CPU ms/session",
            "bench CPU ms/session",
        ],
    );
    table.row(vec![
        "through the relay".into(),
        report::rate(relay_rate),
        report::ms(lat.p50_us),
        report::ms(lat.p99_us),
        per_session_ms(relay_cpu),
        per_session_ms(bench_cpu),
    ]);
    table.row(vec![
        format!("in process ({} threads)", cores()),
        report::rate(local_rate),
        "-".into(),
        "-".into(),
        "-".into(),
        per_session_ms(local_cpu),
    ]);
    table.print();
    println!("ratio relay / in-process: {:.3}", relay_rate / local_rate);
    println!(
        "key-store writes (fsync'd rewrites) per session, all parties: {writes_per_session:.2}"
    );
    let result = json!({
        "workload": "sign",
        "params": {"n": a.n, "t": a.t, "curve": a.curve.to_string(), "sessions": a.sessions,
                   "concurrency": a.concurrency, "durability": a.durability.as_str()},
        "relay": {"sessions_per_s": relay_rate, "latency": lat.json(),
                  "relay_cpu_s": relay_cpu, "bench_cpu_s": bench_cpu,
                  "key_store_writes_per_session": writes_per_session,
                  "wall_s": relay_wall.as_secs_f64()},
        "in_process": {"sessions_per_s": local_rate, "threads": cores(),
                       "cpu_s": local_cpu, "wall_s": local_wall.as_secs_f64()},
        "ratio": relay_rate / local_rate,
    });
    if let Some(p) = &a.output.json {
        report::write_json(p, &result)?;
    }
    f.target.stop().await;
    Ok(())
}

pub async fn keygen(a: KeygenArgs) -> Result<(), String> {
    if a.t < 2 || a.t > a.n {
        return Err(format!("--t {} must be between 2 and --n {}", a.t, a.n));
    }
    if a.output.plot.is_some() {
        return Err("--plot draws latency distributions; keygen runs one session, so there is nothing to plot: drop --plot".into());
    }
    let f = fleet(&a.relay, a.durability, a.n, "keyholder").await?;
    // Each party takes its session_created event and runs the session itself, so the bench
    // can add up what each one sent.
    let mut runs = Vec::new();
    for node in &f.nodes {
        let node = node.clone();
        let mut events = node.client().session_events(&["session_created"]);
        runs.push(tokio::spawn(async move {
            let ev = events.next_event().await.map_err(|e| e.to_string())?;
            let token = ev
                .join_token
                .clone()
                .ok_or("session_created without a join token")?;
            node.client()
                .ack_event(&ev)
                .await
                .map_err(|e| e.to_string())?;
            node.run_session(&ev.session_id, &token)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    let pb = report::bar(None, "distributed keygen");
    let start = Instant::now();
    let key = f
        .coordinator
        .keygen(&f.names, a.t, a.curve, Duration::from_secs(600))
        .await
        .map_err(|e| e.to_string())?;
    let relay_wall = start.elapsed();
    let mut traffic = Traffic::default();
    for r in runs {
        let (outcome, t) = r.await.map_err(|e| e.to_string())??;
        if outcome
            != (Outcome::Keygen {
                group_public_key: key.group_public_key.clone(),
            })
        {
            return Err("a party finished with another group key".into());
        }
        traffic.messages += t.messages;
        traffic.bytes += t.bytes;
    }
    pb.finish_and_clear();
    let usage = f.target.usage();

    let start = Instant::now();
    inprocess::run_dkg(a.curve, a.n, a.t).map_err(|e| e.to_string())?;
    let local_wall = start.elapsed();

    let mut table = Table::new(
        format!(
            "keygen: {}-of-{} {} FROST DKG; {}",
            a.t,
            a.n,
            a.curve,
            f.target.describe()
        ),
        &[
            "path",
            "wall",
            "messages sent",
            "payload bytes",
            "relay peak RSS",
        ],
    );
    table.row(vec![
        "through the relay".into(),
        format!("{:.2} s", relay_wall.as_secs_f64()),
        traffic.messages.to_string(),
        report::mib(traffic.bytes),
        usage
            .map(|u| report::mib(u.peak_rss_bytes))
            .unwrap_or_else(|| "-".into()),
    ]);
    table.row(vec![
        "in process (1 thread)".into(),
        format!("{:.2} s", local_wall.as_secs_f64()),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    table.print();
    println!(
        "ratio in-process / relay wall time: {:.3}",
        local_wall.as_secs_f64() / relay_wall.as_secs_f64()
    );
    let result = json!({
        "workload": "keygen",
        "params": {"n": a.n, "t": a.t, "curve": a.curve.to_string(), "durability": a.durability.as_str()},
        "relay": {"wall_s": relay_wall.as_secs_f64(), "messages": traffic.messages, "payload_bytes": traffic.bytes,
                  "relay_cpu_s": usage.map(|u| u.cpu_s), "relay_peak_rss_bytes": usage.map(|u| u.peak_rss_bytes)},
        "in_process": {"wall_s": local_wall.as_secs_f64()},
        "group_public_key": hex::encode(&key.group_public_key),
    });
    if let Some(p) = &a.output.json {
        report::write_json(p, &result)?;
    }
    f.target.stop().await;
    Ok(())
}
