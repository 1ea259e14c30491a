//! The real `cohort serve` binary, killed: SIGKILL while senders run loses nothing whose
//! RouteMessage had returned, and corrupts nothing; SIGTERM ends open streams and exits 0.

#[path = "../../server/tests/common/client.rs"]
#[allow(dead_code)]
mod client;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use client::*;
use cohort_crypto::identity::IdentityKey;
use cohort_wire::cohort::CreateSessionRequest;
use cohort_wire::router::{
    JoinSessionRequest, MarkPartyReadyRequest, RouteMessageRequest, SubscribeMessagesRequest,
};

/// A `cohort serve` child process. Dropping it kills the process, so a failing test leaves
/// nothing running.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Serve {
    /// Starts `cohort serve` on `data_dir` with a free loopback port, and waits for its
    /// `listening grpc=ADDR ...` line.
    fn start(data_dir: &Path, log: PathBuf, coordinator: &IdentityKey) -> Serve {
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--grpc-addr", "127.0.0.1:0", "--metrics-addr", "off"])
            .env("COHORT_COORDINATOR_KEYS", hex::encode(coordinator.public()))
            .env("COHORT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn cohort serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the ready line, then keeps draining stdout until the child exits.
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
        let mut serve = Serve {
            child,
            addr: "127.0.0.1:1".parse().expect("placeholder"),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => serve.addr = addr.parse().expect("grpc= carries a socket address"),
            Err(e) => panic!(
                "cohort serve printed no `listening grpc=` line ({e}); its log:\n{}",
                serve.log_text()
            ),
        }
        serve
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (at most 10 s, a safety net) for the process to exit.
    async fn exited(&mut self) -> ExitStatus {
        for _ in 0..500 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cohort serve did not exit; its log:\n{}", self.log_text());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A session of `parties`, every one joined and ready.
async fn running_session(coord: &Party, parties: &[&Party]) -> String {
    let created = coord
        .sessions()
        .create_session(CreateSessionRequest {
            session_type: "keygen".into(),
            threshold_n: parties.len() as i32,
            threshold_t: 2,
            parties: parties.iter().map(|p| p.id.clone()).collect(),
            ..Default::default()
        })
        .await
        .expect("CreateSession")
        .into_inner();
    for p in parties {
        p.router()
            .join_session(JoinSessionRequest {
                session_id: created.session_id.clone(),
                party_id: p.id.clone(),
                join_token: created.join_tokens[&p.id].clone(),
                device_info: None,
            })
            .await
            .expect("JoinSession");
    }
    for p in parties {
        p.router()
            .mark_party_ready(MarkPartyReadyRequest {
                session_id: created.session_id.clone(),
                party_id: p.id.clone(),
            })
            .await
            .expect("MarkPartyReady");
    }
    created.session_id
}

fn route_req(session_id: &str, from: &str, to: &str, payload: Vec<u8>) -> RouteMessageRequest {
    RouteMessageRequest {
        session_id: session_id.into(),
        from_party: from.into(),
        to_parties: vec![to.into()],
        round_number: 1,
        message_type: "round1".into(),
        payload,
    }
}

/// A message whose RouteMessage returned Ok: its id and exact payload.
struct Recorded {
    id: String,
    payload: Vec<u8>,
}

const SENDERS: usize = 4;
/// Kill once at least this many sends were acknowledged.
const KILL_AFTER: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_senders_run_loses_and_corrupts_nothing_acknowledged() {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    let coordinator = IdentityKey::generate();
    let receiver_secret = IdentityKey::generate().to_bytes();

    let mut serve = Serve::start(&data, work.path().join("first.log"), &coordinator);
    let channel = connect(serve.addr).await;
    let coord = login(
        &channel,
        "coordinator",
        IdentityKey::from_bytes(&coordinator.to_bytes()),
    )
    .await;
    assert!(coord.coordinator, "COHORT_COORDINATOR_KEYS grants the role");
    let sender_secrets: Vec<[u8; 32]> = (0..SENDERS)
        .map(|_| IdentityKey::generate().to_bytes())
        .collect();
    let mut senders = Vec::new();
    for (i, secret) in sender_secrets.iter().enumerate() {
        let key = IdentityKey::from_bytes(secret);
        enroll(&coord, &format!("sender-{i}"), &key).await;
        senders.push(login(&channel, &format!("sender-{i}"), key).await);
    }
    enroll(
        &coord,
        "receiver",
        &IdentityKey::from_bytes(&receiver_secret),
    )
    .await;
    let receiver = login(
        &channel,
        "receiver",
        IdentityKey::from_bytes(&receiver_secret),
    )
    .await;
    let mut members: Vec<&Party> = senders.iter().collect();
    members.push(&receiver);
    let sid = running_session(&coord, &members).await;

    // Senders route in a loop and record every message RouteMessage acknowledged.
    let recorded: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let mut tasks = Vec::new();
    for sender in &senders {
        let mut router = sender.router();
        let (me, sid, recorded) = (sender.id.clone(), sid.clone(), recorded.clone());
        tasks.push(tokio::spawn(async move {
            for counter in 0u64.. {
                let payload = format!("{me}|{counter}").into_bytes();
                let sent = router
                    .route_message(route_req(&sid, &me, "receiver", payload.clone()))
                    .await;
                match sent {
                    Ok(r) => recorded.lock().expect("lock").push(Recorded {
                        id: r.into_inner().message_id,
                        payload,
                    }),
                    Err(status) => return status, // the relay is gone
                }
            }
            unreachable!("the relay is killed long before u64::MAX sends")
        }));
    }
    let count = || recorded.lock().expect("lock").len();
    for _ in 0..3000 {
        if count() >= KILL_AFTER {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(count() >= KILL_AFTER, "senders made too little progress");

    serve.child.kill().expect("SIGKILL"); // std's Child::kill sends SIGKILL on Unix
    let status = serve.exited().await;
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL, not exited");
    }
    for t in tasks {
        let refusal = tokio::time::timeout(STREAM_TIMEOUT, t)
            .await
            .expect("senders stop once the relay is gone")
            .expect("sender task");
        assert_ne!(refusal.code(), tonic::Code::Ok);
    }
    let recorded = std::mem::take(&mut *recorded.lock().expect("lock"));
    assert!(recorded.len() >= KILL_AFTER);
    drop((senders, coord, channel));
    drop(serve);

    // Restart on the same data directory; the receiver logs in again.
    let serve = Serve::start(&data, work.path().join("second.log"), &coordinator);
    let channel = connect(serve.addr).await;
    let receiver = login(
        &channel,
        "receiver",
        IdentityKey::from_bytes(&receiver_secret),
    )
    .await;
    let mut stream = receiver
        .router()
        .subscribe_messages(SubscribeMessagesRequest {
            session_id: sid.clone(),
            party_id: "receiver".into(),
        })
        .await
        .expect("SubscribeMessages after the restart")
        .into_inner();
    // A last message after the restart: everything committed before the kill comes before it.
    let sender = login(
        &channel,
        "sender-0",
        IdentityKey::from_bytes(&sender_secrets[0]),
    )
    .await;
    let sentinel = sender
        .router()
        .route_message(route_req(
            &sid,
            "sender-0",
            "receiver",
            b"sentinel".to_vec(),
        ))
        .await
        .expect("RouteMessage after the restart")
        .into_inner()
        .message_id;

    let mut want: HashMap<&str, &[u8]> = recorded
        .iter()
        .map(|r| (r.id.as_str(), r.payload.as_slice()))
        .collect();
    assert_eq!(want.len(), recorded.len(), "message ids are unique");
    let mut seen = HashSet::new();
    let mut unrecorded = 0;
    let mut last_counter: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let m = next(&mut stream).await;
        if m.message_id == sentinel {
            break;
        }
        if !seen.insert(m.message_id.clone()) {
            continue; // redelivery is allowed; receivers drop duplicates by id
        }
        // Every payload, acknowledged or not, is intact: `sender|counter` from its sender.
        let text = String::from_utf8(m.payload.clone())
            .unwrap_or_else(|_| panic!("payload of {} is not UTF-8", m.message_id));
        let (from, counter) = text
            .split_once('|')
            .unwrap_or_else(|| panic!("corrupted payload {text:?}"));
        assert_eq!(from, m.from_party, "payload {text:?} under another sender");
        let counter: u64 = counter
            .parse()
            .unwrap_or_else(|_| panic!("corrupted payload {text:?}"));
        // Each sender's messages arrive in the order it sent them.
        if let Some(prev) = last_counter.insert(m.from_party.clone(), counter) {
            assert!(counter > prev, "{from}: {counter} after {prev}");
        }
        match want.remove(m.message_id.as_str()) {
            Some(payload) => assert_eq!(m.payload, payload, "payload of {}", m.message_id),
            None => unrecorded += 1,
        }
    }
    assert!(
        want.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        want.len(),
        want.keys().next()
    );
    eprintln!(
        "{} acknowledged sends before SIGKILL, all delivered intact; {unrecorded} more committed unacknowledged",
        recorded.len()
    );
    // A message can be committed while its sender never heard back: one in flight per sender.
    assert!(
        unrecorded <= SENDERS,
        "{unrecorded} messages nobody was told about"
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_and_exits_zero() {
    let work = tempfile::tempdir().expect("temp dir");
    let coordinator = IdentityKey::generate();
    let mut serve = Serve::start(
        &work.path().join("data"),
        work.path().join("serve.log"),
        &coordinator,
    );
    let channel = connect(serve.addr).await;
    let coord = login(
        &channel,
        "coordinator",
        IdentityKey::from_bytes(&coordinator.to_bytes()),
    )
    .await;
    let alice_secret = IdentityKey::generate().to_bytes();
    let bob_key = IdentityKey::generate();
    enroll(&coord, "alice", &IdentityKey::from_bytes(&alice_secret)).await;
    enroll(&coord, "bob", &bob_key).await;
    let a = login(&channel, "alice", IdentityKey::from_bytes(&alice_secret)).await;
    let b = login(&channel, "bob", bob_key).await;
    let sid = running_session(&coord, &[&a, &b]).await;
    let mut stream = b
        .router()
        .subscribe_messages(SubscribeMessagesRequest {
            session_id: sid.clone(),
            party_id: "bob".into(),
        })
        .await
        .expect("SubscribeMessages")
        .into_inner();
    let routed = a
        .router()
        .route_message(route_req(&sid, "alice", "bob", b"hello".to_vec()))
        .await
        .expect("RouteMessage")
        .into_inner()
        .message_id;
    assert_eq!(next(&mut stream).await.payload, b"hello"); // the stream is live

    serve.signal("TERM");
    let end = tokio::time::timeout(STREAM_TIMEOUT, stream.message())
        .await
        .expect("the stream ends after SIGTERM");
    match end {
        Err(status) => assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "a stream cut by shutdown says so, so the client reconnects: {status:?}"
        ),
        other => panic!("the stream ends with UNAVAILABLE, not with {other:?}"),
    }
    let status = serve.exited().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", serve.log_text());
    assert!(
        serve.log_text().contains("stopped cleanly"),
        "log:\n{}",
        serve.log_text()
    );

    // A clean stop checkpoints the WAL and closes every handle: only the database is left,
    // and it holds every row.
    let data = work.path().join("data");
    for leftover in ["cohort.sqlite-wal", "cohort.sqlite-shm"] {
        assert!(
            !data.join(leftover).exists(),
            "{leftover} is left after a clean stop"
        );
    }
    let again = Serve::start(&data, work.path().join("serve2.log"), &coordinator);
    let channel = connect(again.addr).await;
    let a = login(&channel, "alice", IdentityKey::from_bytes(&alice_secret)).await;
    let status = a
        .router()
        .get_message_status(cohort_wire::router::GetMessageStatusRequest {
            message_id: routed.clone(),
            session_id: sid.clone(),
        })
        .await
        .expect("the message is still there after the restart")
        .into_inner();
    assert_eq!(status.message_id, routed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_logged_with_method_party_and_code_but_never_the_token() {
    let work = tempfile::tempdir().expect("temp dir");
    let coordinator = IdentityKey::generate();
    let serve = Serve::start(
        &work.path().join("data"),
        work.path().join("serve.log"),
        &coordinator,
    );
    let channel = connect(serve.addr).await;
    let forged = "forged-token-0123456789abcdef";
    let refused = router_with(&channel, Bearer::token(forged))
        .heartbeat(cohort_wire::router::HeartbeatRequest {
            party_id: "mallory".into(),
            timestamp: 0,
        })
        .await
        .expect_err("a forged token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let coord = login(
        &channel,
        "coordinator",
        IdentityKey::from_bytes(&coordinator.to_bytes()),
    )
    .await;
    let alice_key = IdentityKey::generate();
    enroll(&coord, "alice", &alice_key).await;
    let alice = login(&channel, "alice", alice_key).await;
    let refused = alice
        .router()
        .heartbeat(cohort_wire::router::HeartbeatRequest {
            party_id: "bob".into(),
            timestamp: 0,
        })
        .await
        .expect_err("alice may not heartbeat as bob");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let log = serve.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("call refused")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/mpc.router.v1.MessageRouter/Heartbeat")
                && l.contains("Unauthenticated")),
        "the forged-token call is logged: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("party=\"alice\"") || l.contains("party=alice"))
            && lines.iter().any(|l| l.contains("PermissionDenied")),
        "the refused call names the party and code: {lines:#?}"
    );
    assert!(!log.contains(forged), "the log holds a token:\n{log}");
    assert!(!log.contains(&alice.token), "the log holds a token:\n{log}");
}
