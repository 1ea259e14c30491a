//! The real `cohort serve` binary stops on SIGTERM within its shutdown grace period while
//! peers hold connections open that would otherwise keep it waiting: one that sent nothing,
//! one that sent only the HTTP/2 preface, one idle after its handshake, and a client with an
//! open stream.

#[path = "../../server/tests/common/client.rs"]
#[allow(dead_code)]
mod client;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use client::*;
use cohort_crypto::identity::IdentityKey;
use cohort_wire::router::{RegisterPartyRequest, SubscribeSessionEventsRequest};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const GRACE_MS: u64 = 1500;

/// Kills the child if the test fails before it exits.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_grace_period_with_silent_and_preface_only_connections_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("cohort.toml");
    // Handshake and idle timeouts far beyond the test, so only the shutdown closes them.
    std::fs::write(
        &config,
        format!(
            "[limits]\nshutdown_grace_ms = {GRACE_MS}\nhandshake_timeout_ms = 600000\nidle_timeout_ms = 600000\n"
        ),
    )
    .expect("write config");
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--grpc-addr", "127.0.0.1:0", "--metrics-addr", "off"])
        .env_remove("COHORT_COORDINATOR_KEYS")
        .env("COHORT_LOG", "info")
        // About shutdown, not identity: named parties log in.
        .env("COHORT_OPEN_ENROLLMENT", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn cohort serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut child = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("grpc="))
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the listening line")
        .parse()
        .expect("an address");

    let silent = TcpStream::connect(addr).await.expect("connect");
    let mut preface_only = TcpStream::connect(addr).await.expect("connect");
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    let mut handshaken = TcpStream::connect(addr).await.expect("connect");
    handshaken
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface and SETTINGS");
    let channel = connect(addr).await;
    let alice = login(&channel, "alice", IdentityKey::generate()).await;
    alice
        .router()
        .register_party(RegisterPartyRequest {
            party_id: "alice".into(),
            party_role: "persistent".into(),
            version: "test".into(),
            notification: None,
        })
        .await
        .expect("RegisterParty");
    let events = alice
        .router()
        .subscribe_session_events(SubscribeSessionEventsRequest {
            party_id: "alice".into(),
            event_types: vec![],
        })
        .await
        .expect("an open stream");

    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill(1)");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            panic!(
                "cohort serve still running 20 s after SIGTERM; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    println!("exited {took:?} after SIGTERM (grace {GRACE_MS} ms)");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The grace period plus a generous margin for process exit on a loaded machine.
    assert!(
        took < Duration::from_millis(GRACE_MS) + Duration::from_secs(8),
        "took {took:?}"
    );
    drop((silent, preface_only, handshaken, events));
}
