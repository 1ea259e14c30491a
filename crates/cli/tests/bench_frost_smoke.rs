//! `cohort bench sign` and `cohort bench keygen` keep working (tiny counts; no timing asserts).

use std::process::Command;

fn bench_json(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("cohort bench runs");
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("the JSON file was written");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn sign_workload_reports_both_paths() {
    let v = bench_json(&["sign", "--sessions", "4", "--concurrency", "2"]);
    assert_eq!(v["workload"], "sign");
    assert_eq!(v["params"]["sessions"], 4);
    assert!(v["relay"]["sessions_per_s"]
        .as_f64()
        .is_some_and(|r| r > 0.0));
    assert!(v["in_process"]["sessions_per_s"]
        .as_f64()
        .is_some_and(|r| r > 0.0));
    assert_eq!(v["relay"]["latency"]["count"], 4);
}

#[test]
fn keygen_workload_counts_the_messages_of_a_dkg() {
    let v = bench_json(&["keygen", "--n", "4", "--t", "3"]);
    assert_eq!(v["workload"], "keygen");
    // Each of 4 parties: one round-1 broadcast, one echo, and a share for each of 3 others.
    assert_eq!(v["relay"]["messages"], 4 * (1 + 1 + 3));
    assert_eq!(v["group_public_key"].as_str().map(str::len), Some(64));
}
