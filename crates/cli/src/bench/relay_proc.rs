//! The relay under test. By default a child `cohort serve` on loopback in a temp dir, so its
//! CPU time and memory can be read from /proc apart from the load generator's; with
//! `--relay URL --coordinator-key PATH`, a relay that is already running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cohort_crypto::identity::IdentityKey;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::{Durability, RelayOpts};

/// CPU time and memory of one process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcUsage {
    /// User plus system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident set size now (VmRSS).
    pub rss_bytes: u64,
    /// Peak resident set size since the process started (VmHWM).
    pub peak_rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` (utime, stime) and `/proc/<pid>/status` (VmRSS, VmHWM).
pub fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some(ProcUsage {
        cpu_s: (utime + stime) as f64 / clock_ticks_per_second(),
        rss_bytes: kib("VmRSS:")? * 1024,
        peak_rss_bytes: kib("VmHWM:")? * 1024,
    })
}

/// CPU seconds the whole machine has been busy (all cores; not idle, not waiting for I/O),
/// from `/proc/stat`. The difference over a run, minus the server's and the bench's own,
/// is what other processes took: on a shared machine that tells whether a run was disturbed.
pub fn machine_busy_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    Some(busy as f64 / clock_ticks_per_second())
}

/// `sysconf(_SC_CLK_TCK)` without unsafe code: asks `getconf`, which is 100 on every Linux
/// this runs on, and falls back to that.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// A relay the bench drives.
pub struct Target {
    /// gRPC URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// A key that the relay grants the coordinator role.
    pub coordinator: IdentityKey,
    /// The durability the bench started it with; `None` when attached (unknown).
    pub durability: Option<Durability>,
    spawned: Option<Spawned>,
}

struct Spawned {
    child: Child,
    pid: u32,
    /// Kept open: the relay must never see a closed stdout.
    _stdout: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
}

/// The bench drives one relay from one address as fast as it can, with thousands of parties
/// logging in at once: it measures throughput, not admission, so every rate limit is off and
/// every connection comes from loopback (`scale` opens 100 streams on one connection, the
/// default cap, plus its unary calls).
const BENCH_LIMITS: &str = "[limits]
calls_per_second_per_address = 0
calls_per_second_per_identity = 0
challenges_per_second_per_address = 0
logins_per_second_per_address = 0
sessions_per_second_per_identity = 0
routes_per_second_per_identity = 0
streams_per_second_per_identity = 0
max_connections_per_address = 100000
max_streams_per_connection = 1000
";

impl Target {
    /// Spawns a relay, or attaches to the one `opts` names.
    pub async fn open(opts: &RelayOpts, durability: Durability) -> Result<Target, String> {
        match (&opts.relay, &opts.coordinator_key) {
            (Some(url), Some(key)) => Target::attach(url, key),
            (Some(_), None) => Err(
                "--relay needs --coordinator-key PATH (the relay's <data-dir>/coordinator.key)"
                    .into(),
            ),
            _ => Target::spawn(durability).await,
        }
    }

    /// Attaches to a running relay.
    pub fn attach(url: &str, key_path: &Path) -> Result<Target, String> {
        Ok(Target {
            url: url.to_string(),
            coordinator: crate::threshold::load_coordinator_key(key_path)?,
            durability: None,
            spawned: None,
        })
    }

    /// Starts `cohort serve` (this very binary) in a fresh temp dir on a free loopback port.
    pub async fn spawn(durability: Durability) -> Result<Target, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the cohort binary to spawn the relay: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("cohort-bench-")
            .tempdir()
            .map_err(|e| {
                format!(
                    "cannot create a temp dir for the relay in {}: {e}; set TMPDIR to a writable directory",
                    std::env::temp_dir().display()
                )
            })?;
        let data = dir.path().join("data");
        let log_path = dir.path().join("relay.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let config_path = dir.path().join("cohort.toml");
        std::fs::write(&config_path, BENCH_LIMITS)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let mut child = Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data)
            .args(["--grpc-addr", "127.0.0.1:0", "--metrics-addr", "off"])
            .args(["--durability", durability.as_str()])
            // The bench trusts the key the relay creates; a configured one would replace it.
            .env_remove("COHORT_COORDINATOR_KEYS")
            .env(
                "COHORT_LOG",
                std::env::var("COHORT_BENCH_RELAY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the relay ({} serve): {e}", exe.display()))?;
        let pid = child.id().ok_or("the relay exited as soon as it started")?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the relay's stdout is not piped")?;
        let mut stdout = BufReader::new(stdout);
        let addr = match tokio::time::timeout(Duration::from_secs(60), listening_addr(&mut stdout))
            .await
        {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Err(format!("{e}\n{}", log_tail(&log_path))),
            Err(_) => {
                return Err(format!(
                    "the relay did not print its `listening` line within 60 s\n{}",
                    log_tail(&log_path)
                ))
            }
        };
        let coordinator = crate::threshold::load_coordinator_key(&data.join("coordinator.key"))?;
        Ok(Target {
            url: format!("http://{addr}"),
            coordinator,
            durability: Some(durability),
            spawned: Some(Spawned {
                child,
                pid,
                _stdout: stdout,
                dir,
            }),
        })
    }

    /// CPU time and memory of the relay process, when the bench spawned it.
    pub fn usage(&self) -> Option<ProcUsage> {
        self.spawned.as_ref().and_then(|s| proc_usage(s.pid))
    }

    /// The relay's data directory, when the bench spawned it.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.spawned.as_ref().map(|s| s.dir.path().join("data"))
    }

    /// One line for the output: what was measured, and what was not.
    pub fn describe(&self) -> String {
        match (&self.spawned, self.durability) {
            (Some(s), Some(d)) => format!(
                "relay: spawned `cohort serve --durability {}` (pid {}) at {}, data in {}",
                d.as_str(),
                s.pid,
                self.url,
                s.dir.path().display()
            ),
            _ => format!(
                "relay: attached to {} (not spawned by the bench: its CPU time and RSS are not measured)",
                self.url
            ),
        }
    }

    /// Stops a spawned relay and removes its temp dir; leaves an attached one alone.
    pub async fn stop(self) {
        if let Some(mut s) = self.spawned {
            let _ = s.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.child.wait()).await;
        }
    }
}

async fn listening_addr(stdout: &mut BufReader<ChildStdout>) -> Result<String, String> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdout
            .read_line(&mut line)
            .await
            .map_err(|e| format!("cannot read the relay's stdout: {e}"))?;
        if n == 0 {
            return Err("the relay exited before it was listening".into());
        }
        if let Some(rest) = line.trim().strip_prefix("listening grpc=") {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            if !addr.is_empty() {
                return Ok(addr.to_string());
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("relay log ({}):\n{tail}", path.display())
}
