//! The attack from the issue, against the real binary: at a file descriptor limit of 1,024,
//! 1,100 connections that send nothing. The relay lowers `max_connections` to fit the limit
//! (and says so), refuses the connections past it instead of failing to accept, closes the
//! silent ones after the handshake timeout, and serves a new client.

#[path = "../../server/tests/common/client.rs"]
#[allow(dead_code)]
mod client;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use client::*;
use cohort_crypto::identity::IdentityKey;
use tokio::net::TcpSocket;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_silent_connections_at_1024_descriptors_do_not_lock_clients_out() {
    // This process holds the 1,100 client sockets.
    let ours = rlimit::increase_nofile_limit(4096).expect("descriptor limit");
    assert!(
        ours >= 2048,
        "the test needs 2,048 descriptors; ulimit -n allows {ours}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("cohort.toml");
    std::fs::write(&config, "[limits]\nhandshake_timeout_ms = 2000\n").expect("config");
    let log = dir.path().join("serve.log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_cohort"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--grpc-addr", "127.0.0.1:0", "--metrics-addr", "off"])
        .env_remove("COHORT_COORDINATOR_KEYS")
        .env("COHORT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn cohort serve under ulimit -n 1024");
    let stdout = child.stdout.take().expect("piped stdout");
    let _child = Killed(child);
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
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text().contains("lowered"),
        "the relay says it lowered max_connections:\n{}",
        log_text()
    );

    // 220 from each of 5 addresses (under the per-address cap of 256).
    let mut silent = Vec::with_capacity(1100);
    for i in 0..1100u32 {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((
                Ipv4Addr::new(127, 0, 0, 2 + (i / 220) as u8),
                0,
            )))
            .expect("bind");
        silent.push(socket.connect(addr).await.expect("connect"));
    }

    // A new client is served: at once if there is room, else once the silent ones are
    // closed by the handshake timeout. It retries, as clients do, for at most 30 s.
    let started = Instant::now();
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .ok()?;
            let mut auth = cohort_wire::cohort::auth_client::AuthClient::new(channel.clone());
            auth.get_challenge(cohort_wire::cohort::GetChallengeRequest {
                party_id: "newcomer".into(),
                public_key: IdentityKey::generate().public().to_vec(),
            })
            .await
            .ok()?;
            Some(channel)
        })
        .await;
        if let Ok(Some(channel)) = attempt {
            // An unenrolled newcomer logs in under its key's own id.
            let key = IdentityKey::generate();
            let id = cohort_crypto::identity::key_party_id(&key.public());
            login(&channel, &id, key).await;
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no new client served within 30 s; relay log:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("new client served after {:?}", started.elapsed());
    let text = log_text();
    assert!(
        text.contains("connection refused or closed by a limit"),
        "refusals are logged:\n{text}"
    );
    assert!(
        !text.contains("cannot accept"),
        "the relay never ran out of descriptors:\n{text}"
    );
    drop(silent);
}
