//! A deployment as the README describes it: `cohort serve`, three parties enrolled with
//! `cohort enroll` and run as `cohort party` daemons, then `cohort keygen` and `cohort sign`
//! against them, all real processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cohort");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> (Killed, String) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "off",
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cohort serve starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .expect("listening grpc=ADDR")
        .to_string();
    (Killed(child), format!("http://{addr}"))
}

/// `cohort party --print-identity`: the party's identity key (creating its key store), and
/// `cohort enroll` of it, as the operator does before starting the daemon.
fn enroll(dir: &Path, relay: &str, name: &str) {
    let out = Command::new(BIN)
        .args(["party", "--relay", relay, "--party-id", name])
        .args(["--key-store", &format!("{name}.keys"), "--print-identity"])
        .env("COHORT_PASSPHRASE", format!("passphrase of {name}"))
        .current_dir(dir)
        .output()
        .expect("cohort party --print-identity runs");
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(key.len(), 64, "a hex Ed25519 key: {key:?}");
    let (ok, out, err) = run(
        dir,
        &[
            "enroll",
            "--relay",
            relay,
            "--party-id",
            name,
            "--key",
            &key,
        ],
    );
    assert!(ok, "enroll failed: {out}\n{err}");
    assert_eq!(field(&out, "party id"), name);
    assert_eq!(field(&out, "identity key"), key);
}

fn party(dir: &Path, relay: &str, name: &str) -> Killed {
    let child = Command::new(BIN)
        .args(["party", "--relay", relay, "--party-id", name])
        .args(["--key-store", &format!("{name}.keys")])
        .env("COHORT_PASSPHRASE", format!("passphrase of {name}"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cohort party starts");
    Killed(child)
}

fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cohort runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name:?} in {out}"))
}

#[test]
fn keygen_and_sign_with_party_daemons() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_relay, url) = serve(dir.path());
    let _parties: Vec<Killed> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| {
            enroll(dir.path(), &url, n);
            party(dir.path(), &url, n)
        })
        .collect();

    // The daemons need a moment to log in; keygen names them explicitly, and a party not
    // yet registered is NOT_FOUND, so retry a bounded number of times.
    let mut keygen = (false, String::new(), String::new());
    for _ in 0..100 {
        keygen = run(
            dir.path(),
            &[
                "keygen",
                "--relay",
                &url,
                "--parties",
                "alice,bob,carol",
                "--threshold",
                "2",
            ],
        );
        if keygen.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(keygen.0, "keygen failed: {}\n{}", keygen.1, keygen.2);
    let key = field(&keygen.1, "group public key");
    assert_eq!(key.len(), 64, "an Ed25519 group key: {key}");

    let (ok, out, err) = run(
        dir.path(),
        &[
            "sign",
            "--relay",
            &url,
            "--key",
            &key,
            "--message",
            "pay bob 5",
            "--signers",
            "bob,carol",
        ],
    );
    assert!(ok, "sign failed: {out}\n{err}");
    assert_eq!(field(&out, "verification"), "VALID");
    assert_eq!(field(&out, "signers"), "bob, carol");

    // A signer that holds no share is refused by the coordinator with its name.
    let (ok, _, err) = run(
        dir.path(),
        &[
            "sign",
            "--relay",
            &url,
            "--key",
            &key,
            "--message",
            "x",
            "--signers",
            "alice,zed",
        ],
    );
    assert!(!ok);
    assert!(err.contains("zed holds no share"), "{err}");

    // The key stores hold the shares encrypted: the group key is public, but no store
    // file is plain text with it.
    for n in ["alice", "bob", "carol"] {
        let bytes = std::fs::read(dir.path().join(format!("{n}.keys"))).expect("key store exists");
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()));
    }
}

#[test]
fn an_unenrolled_party_is_refused_and_told_to_enroll_until_cohort_enroll_binds_its_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_relay, url) = serve(dir.path());
    let store = ["--key-store", "alice.keys"];
    let daemon = |extra: &[&str]| {
        Command::new(BIN)
            .args(["party", "--relay", &url, "--party-id", "treasury-signer-1"])
            .args(store)
            .args(extra)
            .env("COHORT_PASSPHRASE", "pass")
            .current_dir(dir.path())
            .output()
            .expect("cohort party runs")
    };
    let out = daemon(&["--print-identity"]);
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(key.len(), 64, "{out:?}");

    // Not enrolled: the daemon stops at login, naming the command that fixes it.
    let out = daemon(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cohort enroll --party-id treasury-signer-1 --key {key}"
        )),
        "{err}"
    );

    // Bad input to `cohort enroll` names the flag.
    let (ok, _, err) = run(
        dir.path(),
        &[
            "enroll",
            "--relay",
            &url,
            "--party-id",
            "treasury-signer-1",
            "--key",
            "abc",
        ],
    );
    assert!(!ok);
    assert!(err.contains("--key"), "{err}");

    let (ok, out, err) = run(
        dir.path(),
        &[
            "enroll",
            "--relay",
            &url,
            "--party-id",
            "treasury-signer-1",
            "--key",
            &key,
            "--role",
            "persistent",
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert_eq!(field(&out, "role"), "persistent");
    assert_eq!(field(&out, "enrolled by"), "coordinator");

    // Enrolled, the daemon logs in and serves (it runs until killed).
    let mut child = Command::new(BIN)
        .args(["party", "--relay", &url, "--party-id", "treasury-signer-1"])
        .args(store)
        .env("COHORT_PASSPHRASE", "pass")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cohort party starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let child = Killed(child);
    let online = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("party online"));
    assert!(online, "the enrolled party logs in and serves");
    drop(child);
}

/// The lines `cohort serve` logs up to "cohort relay serving", with `env` set.
fn serve_start_log(dir: &Path, env: &[(&str, &str)]) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "off",
        ])
        .envs(env.iter().copied())
        .env_remove("COHORT_LOG")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cohort serve starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let _child = Killed(child);
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let serving = line.contains("cohort relay serving");
        lines.push(line);
        if serving {
            break;
        }
    }
    lines
}

#[test]
fn serve_warns_at_start_when_open_enrollment_is_on_and_only_then() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = serve_start_log(dir.path(), &[("COHORT_OPEN_ENROLLMENT", "true")]);
    assert!(
        open.iter()
            .any(|l| l.contains("WARN") && l.contains("open enrollment is on")),
        "{open:#?}"
    );
    let closed = serve_start_log(dir.path(), &[]);
    assert!(
        closed
            .last()
            .is_some_and(|l| l.contains("cohort relay serving")),
        "{closed:#?}"
    );
    assert!(
        !closed.iter().any(|l| l.contains("open enrollment")),
        "{closed:#?}"
    );
}
