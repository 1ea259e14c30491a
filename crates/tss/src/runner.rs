//! FROST over a Cohort relay: a party's side ([`PartyNode`]) and the coordinator's
//! ([`Coordinator`]), on the SDK.
//!
//! A party joins the sessions it is selected for, checks the coordinator's signed
//! [`Descriptor`] before sending anything, runs the DKG or signing machine over a
//! [`SecureSession`] (point-to-point payloads sealed, everything signed), and reports the
//! result. What it must not lose lives in its encrypted [`KeyStore`]:
//!
//! - `session/<id>`: the join token of a session in progress, so a restarted party resumes it;
//! - `seed/<id>`: the DKG's random seed, so a restarted party replays the same round-1 secret
//!   (peers drop the identical messages it sends again) instead of contradicting itself;
//! - `nonce/<id>`: a signing nonce, written before the commitment leaves, deleted before the
//!   signature share leaves; `signed/<id>` marks that the share was made. A party that
//!   restarts with the marker and no nonce aborts: it never signs twice with one nonce;
//! - `share/<group public key hex>`: the key share.
//!
//! Every change waits until it is on disk; concurrent sessions' changes share one rewrite and
//! fsync of the store ([`SharedKeyStore`]'s group commit).
//!
//! Protocol messages are acknowledged only when the session is over, so after a restart the
//! relay hands the party everything again and the machine is rebuilt by replay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohort_client::{Client, ClientError, CreateSession, SecureSession, SessionEvent};
use cohort_crypto::identity::IdentityKey;
use cohort_crypto::keystore::{KeyStore, SharedKeyStore};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::descriptor::{message_hash, Descriptor, DescriptorError, Purpose};
use crate::{AnyDkg, AnySign, Curve, Incoming, KeyShare, LoadedShare, Outgoing, Step, TssError};

/// How a session run ended badly. `culprit` names the party at fault when one is known.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}{reason}{}",
        if session.is_empty() { String::new() } else { format!("session {session}: ") },
        culprit.as_ref().map(|c| format!(" (culprit: {c})")).unwrap_or_default())]
    Failed {
        session: String,
        reason: String,
        culprit: Option<String>,
    },
    #[error("relay: {0}")]
    Relay(#[from] ClientError),
    #[error("key store: {0}")]
    KeyStore(String),
}

/// What a finished session produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Keygen { group_public_key: Vec<u8> },
    Signed { signature: Vec<u8> },
}

/// Counts of what a run sent, for reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

enum Machine {
    Dkg(Box<AnyDkg>),
    Sign(Box<AnySign>),
}

enum Finished {
    Keygen(KeyShare),
    Signed(Vec<u8>),
}

impl Machine {
    fn handle(&mut self, from: u16, m: Incoming) -> Result<Step<Finished>, TssError> {
        Ok(match self {
            Machine::Dkg(d) => match d.handle(from, m)? {
                Step::Continue(out) => Step::Continue(out),
                Step::Done { output, outgoing } => Step::Done {
                    output: Finished::Keygen(output),
                    outgoing,
                },
            },
            Machine::Sign(s) => match s.handle(from, m)? {
                Step::Continue(out) => Step::Continue(out),
                Step::Done { output, outgoing } => Step::Done {
                    output: Finished::Signed(output),
                    outgoing,
                },
            },
        })
    }
}

/// A party: its relay client, its encrypted key store, and the coordinator keys it trusts.
#[derive(Clone)]
pub struct PartyNode {
    client: Client,
    keys: SharedKeyStore,
    /// Key shares parsed once, by group public key: parsing one checks every point it holds.
    loaded: Arc<Mutex<HashMap<Vec<u8>, LoadedShare>>>,
    trusted: Arc<Vec<[u8; 32]>>,
    /// Sessions with a run in progress here, so a resumed session and its redelivered
    /// event never run twice at once.
    active: Arc<Mutex<std::collections::HashSet<String>>>,
}

fn hex_of(b: &[u8]) -> String {
    hex::encode(b)
}

impl PartyNode {
    pub fn new(client: Client, keys: KeyStore, trusted_coordinators: Vec<[u8; 32]>) -> Self {
        PartyNode {
            client,
            keys: keys.into_shared(),
            loaded: Arc::default(),
            trusted: Arc::new(trusted_coordinators),
            active: Arc::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How many fsync'd rewrites of the key store this node has made (one per group of
    /// concurrent changes).
    pub fn key_store_writes(&self) -> u64 {
        self.keys.writes()
    }

    async fn put(&self, name: &str, value: &[u8]) -> Result<(), RunError> {
        self.change(&[(name, value)], &[]).await
    }

    /// Key store changes made together; returns once they are on disk. The write (and the
    /// wait for it) runs on the blocking pool; concurrent sessions' changes share one write.
    async fn change(&self, puts: &[(&str, &[u8])], removes: &[&str]) -> Result<(), RunError> {
        let keys = self.keys.clone();
        let puts: Vec<(String, Zeroizing<Vec<u8>>)> = puts
            .iter()
            .map(|(n, v)| (n.to_string(), Zeroizing::new(v.to_vec())))
            .collect();
        let removes: Vec<String> = removes.iter().map(|n| n.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let puts: Vec<(&str, &[u8])> = puts
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            let removes: Vec<&str> = removes.iter().map(String::as_str).collect();
            keys.apply(&puts, &removes)
        })
        .await
        .map_err(|e| RunError::KeyStore(format!("key store write did not finish: {e}")))?
        .map_err(|e| RunError::KeyStore(e.to_string()))
    }

    fn get(&self, name: &str) -> Option<Zeroizing<Vec<u8>>> {
        self.keys.get(name)
    }

    /// The key share this party holds for `group_public_key`, if any.
    pub fn share(&self, group_public_key: &[u8]) -> Option<KeyShare> {
        let bytes = self.get(&format!("share/{}", hex_of(group_public_key)))?;
        KeyShare::from_bytes(&bytes).ok()
    }

    /// The share for `group_public_key`, parsed once per key and kept in memory (a share,
    /// once made, never changes).
    fn loaded_share(&self, group_public_key: &[u8]) -> Option<LoadedShare> {
        let cache = || self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = cache().get(group_public_key) {
            return Some(l.clone());
        }
        let l = self.share(group_public_key)?.load().ok()?;
        cache().insert(group_public_key.to_vec(), l.clone());
        Some(l)
    }

    /// Sessions this party was running when it stopped: (session id, join token).
    pub fn unfinished_sessions(&self) -> Vec<(String, String)> {
        self.keys
            .names()
            .iter()
            .filter_map(|n| n.strip_prefix("session/"))
            .filter_map(|sid| {
                let token = self.get(&format!("session/{sid}"))?;
                Some((
                    sid.to_string(),
                    String::from_utf8_lossy(&token).into_owned(),
                ))
            })
            .collect()
    }

    /// Serves until `stop` turns true: resumes unfinished sessions, then joins every session
    /// this party is selected for. Each session runs in its own task; results are logged.
    pub async fn serve(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        for (sid, token) in self.unfinished_sessions() {
            tracing::info!(session = %sid, "resuming a session interrupted by a restart");
            self.spawn_session(sid, token);
        }
        let mut events = self.client.session_events(&["session_created"]);
        // Each event is taken in a task of its own, so sessions created together store their
        // tokens in one key-store write instead of queueing here one behind the other. A
        // key-store failure still stops the party.
        let mut taking = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                ev = events.next_event() => {
                    let ev = ev?;
                    if let Some(token) = ev.join_token.clone() {
                        let me = self.clone();
                        taking.spawn(async move { me.take_event(ev, token).await });
                    }
                }
                Some(taken) = taking.join_next() => {
                    taken.map_err(|e| RunError::Failed {
                        session: String::new(),
                        reason: format!("taking a session_created event: {e}"),
                        culprit: None,
                    })??;
                }
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    }

    /// Stores a new session's join token, acknowledges its event, and runs it.
    async fn take_event(&self, ev: SessionEvent, token: String) -> Result<(), RunError> {
        // The token is stored before the event is acknowledged: from then on a restart
        // resumes the session from the key store, not from the event.
        self.put(&format!("session/{}", ev.session_id), token.as_bytes())
            .await?;
        // The run does not wait for the acknowledgement. Should that be lost, the event comes
        // again: a session still running is not started twice, and the relay refuses the
        // join of one that is over.
        self.spawn_session(ev.session_id.clone(), token);
        if let Err(e) = self.client.ack_event(&ev).await {
            tracing::warn!(session = %ev.session_id, error = %e, "could not acknowledge the event");
        }
        Ok(())
    }

    fn spawn_session(&self, sid: String, token: String) {
        if !self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sid.clone())
        {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _running = ActiveGuard(me.active.clone(), sid.clone());
            let mut delay = Duration::from_millis(50);
            loop {
                match me.run_session(&sid, &token).await {
                    Ok((Outcome::Keygen { group_public_key }, _)) => {
                        tracing::info!(session = %sid, group_public_key = %hex_of(&group_public_key), "keygen completed")
                    }
                    Ok((Outcome::Signed { signature }, _)) => {
                        tracing::info!(session = %sid, signature = %hex_of(&signature), "signed")
                    }
                    // A call failed as the relay restarted or the connection dropped. Run
                    // again, as a restarted party would: nothing was acknowledged, and what
                    // this party sends comes out the same (persisted seed and nonce).
                    Err(RunError::Relay(e)) if e.is_transient() => {
                        tracing::info!(session = %sid, error = %e, "relay call failed mid-session; running the session again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(session = %sid, error = %e, "session did not complete")
                    }
                }
                return;
            }
        });
    }

    /// Reports the failure to the relay (which fails the session) and returns it.
    async fn fail<T>(
        &self,
        sid: &str,
        reason: String,
        culprit: Option<String>,
    ) -> Result<T, RunError> {
        if let Err(e) = self
            .client
            .report_failure(sid, &reason, culprit.as_deref())
            .await
        {
            tracing::warn!(session = %sid, error = %e, "could not report the failure");
        }
        self.forget(sid).await;
        Err(RunError::Failed {
            session: sid.to_string(),
            reason,
            culprit,
        })
    }

    /// Drops what this party kept for session `sid` once it is over: the join token (so a
    /// restart does not resume it) and the secrets no later run can use (DKG seed, unused
    /// nonce, "signed" marker).
    async fn forget(&self, sid: &str) {
        let names: Vec<String> = ["session", "seed", "nonce", "signed"]
            .iter()
            .map(|kind| format!("{kind}/{sid}"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Err(e) = self.change(&[], &names).await {
            tracing::warn!(session = %sid, error = %e, "could not forget the session's key store entries");
        }
    }

    async fn send_all(
        &self,
        sec: &mut SecureSession,
        party_of: &HashMap<u16, String>,
        out: Vec<Outgoing>,
        traffic: &mut Traffic,
    ) -> Result<(), RunError> {
        for o in out {
            let to = match o.to {
                Some(i) => Some(party_of.get(&i).cloned().ok_or_else(|| RunError::Failed {
                    session: sec.session_id().to_string(),
                    reason: format!("protocol addressed unknown party index {i}"),
                    culprit: None,
                })?),
                None => None,
            };
            sec.send_sealed(to.as_deref(), o.round, o.message_type, &o.body)
                .await?;
            traffic.messages += 1;
            traffic.bytes += o.body.len() as u64;
        }
        Ok(())
    }

    /// Joins session `session_id` with `join_token` and runs it to the end.
    pub async fn run_session(
        &self,
        session_id: &str,
        join_token: &str,
    ) -> Result<(Outcome, Traffic), RunError> {
        match self.run(session_id, join_token).await {
            // FAILED_PRECONDITION from a party's call means the session is closed (failed or
            // expired, perhaps while this party was down): nothing of it can be resumed.
            Err(RunError::Relay(e)) if e.is_session_closed() => {
                self.forget(session_id).await;
                Err(closed_elsewhere(session_id, &e))
            }
            other => other,
        }
    }

    async fn run(
        &self,
        session_id: &str,
        join_token: &str,
    ) -> Result<(Outcome, Traffic), RunError> {
        let sid = session_id.to_string();
        let me = self.client.party_id().to_string();
        // `serve` stored the token before acknowledging the event; store it only when the
        // caller came another way.
        let token_name = format!("session/{sid}");
        if self.get(&token_name).as_deref().map(Vec::as_slice) != Some(join_token.as_bytes()) {
            self.put(&token_name, join_token.as_bytes()).await?;
        }
        // One call joins, marks this party ready and answers the session with its signed
        // descriptor. Ready before the descriptor is checked costs nothing: a party that
        // refuses the descriptor reports a failure, which fails the session whatever its
        // readiness.
        let (join, summary, _) = self.client.join_ready(&sid, join_token, true).await?;
        let mut parties = join.parties.clone();
        parties.sort_by_key(|p| p.1);
        let names: Vec<String> = parties.iter().map(|p| p.0.clone()).collect();
        let descriptor = match Descriptor::verify(
            &summary.descriptor,
            &summary.descriptor_signature,
            &self.trusted,
            &names,
            join.n,
            join.t,
            &join.message_hash,
        ) {
            Ok(d) => d,
            Err(e @ (DescriptorError::Untrusted | DescriptorError::Missing)) => {
                return self
                    .fail(
                        &sid,
                        format!("refusing the session: {e}"),
                        Some(summary.creator),
                    )
                    .await
            }
            Err(e) => {
                return self
                    .fail(&sid, format!("refusing the session: {e}"), None)
                    .await
            }
        };
        // The relay admits as participants exactly the keys the coordinator named, this
        // party's own among them.
        let session_keys: Vec<(String, Vec<u8>)> = summary
            .participants
            .iter()
            .map(|p| (p.party_id.clone(), p.identity_key.clone()))
            .collect();
        let named_me = descriptor.identities().get(&me).copied();
        if let Err(e) = descriptor.check_keys(&session_keys) {
            return self
                .fail(&sid, format!("refusing the session: {e}"), None)
                .await;
        }
        if named_me != Some(self.client.identity_public()) {
            return self
                .fail(
                    &sid,
                    format!(
                        "refusing the session: the descriptor names another identity key for {me}"
                    ),
                    Some(summary.creator),
                )
                .await;
        }

        let (mut machine, first, index_of) = match &descriptor.purpose {
            Purpose::Keygen { curve } => {
                let seed_name = format!("seed/{sid}");
                let stored = self
                    .get(&seed_name)
                    .and_then(|s| <[u8; 32]>::try_from(&s[..]).ok());
                let seed: [u8; 32] = match stored {
                    Some(s) => s,
                    None => {
                        let mut s = [0u8; 32];
                        rand::rngs::OsRng.fill_bytes(&mut s);
                        self.put(&seed_name, &s).await?;
                        s
                    }
                };
                let (m, out) =
                    match AnyDkg::start_seeded(*curve, join.party_index, join.n, join.t, seed) {
                        Ok(x) => x,
                        Err(e) => {
                            return self
                                .fail(&sid, format!("cannot start keygen: {e}"), None)
                                .await
                        }
                    };
                let index_of: HashMap<String, u16> = parties.into_iter().collect();
                (Machine::Dkg(Box::new(m)), out, index_of)
            }
            Purpose::Sign {
                curve,
                group_public_key,
                message_hash,
                description,
                signers,
            } => {
                let Some(share) = self.loaded_share(group_public_key) else {
                    return self
                        .fail(
                            &sid,
                            format!("{me} holds no share of key {}", hex_of(group_public_key)),
                            Some(me.clone()),
                        )
                        .await;
                };
                let mine = signers.iter().find(|(p, _)| p == &me).map(|(_, i)| *i);
                if share.curve() != *curve || mine != Some(share.index()) {
                    return self
                        .fail(
                            &sid,
                            "descriptor's curve or signer index disagrees with the stored share"
                                .into(),
                            None,
                        )
                        .await;
                }
                tracing::info!(
                    session = %sid,
                    description = %description,
                    message_hash = %hex_of(message_hash),
                    key = %hex_of(group_public_key),
                    "signing as the coordinator asked"
                );
                if self.keys.contains(&format!("signed/{sid}")) {
                    return self
                        .fail(
                            &sid,
                            format!("{me} restarted after sending its signature share; aborting this attempt so no nonce signs twice"),
                            Some(me.clone()),
                        )
                        .await;
                }
                let indices: Vec<u16> = signers.iter().map(|(_, i)| *i).collect();
                let nonce_name = format!("nonce/{sid}");
                let started = match self.get(&nonce_name) {
                    Some(nonce) => AnySign::resume_loaded(&share, &indices, message_hash, &nonce),
                    None => AnySign::start_loaded(&share, &indices, message_hash),
                };
                let (m, out) = match started {
                    Ok(x) => x,
                    Err(e) => {
                        return self
                            .fail(&sid, format!("cannot start signing: {e}"), None)
                            .await
                    }
                };
                let index_of: HashMap<String, u16> = signers.iter().cloned().collect();
                (Machine::Sign(Box::new(m)), out, index_of)
            }
        };
        let party_of: HashMap<u16, String> =
            index_of.iter().map(|(p, i)| (*i, p.clone())).collect();

        // Payloads are verified against the keys the coordinator signed, not the relay's word.
        let mut sec = self
            .client
            .secure_session_with_identities(&sid, descriptor.identities())?;
        if let Machine::Sign(m) = &machine {
            // The nonce is on disk before the commitment that binds it leaves this party.
            // While it is written, fetch the peers' keys the first messages will need.
            let nonce_name = format!("nonce/{sid}");
            let nonce = m
                .nonce_bytes()
                .map_err(|e| RunError::KeyStore(format!("cannot encode the nonce: {e}")))?;
            if let Some(n) = nonce.filter(|n| self.get(&nonce_name).as_ref() != Some(n)) {
                let persist = self.put(&nonce_name, &n);
                tokio::pin!(persist);
                let others: Vec<&String> = index_of.keys().filter(|p| **p != me).collect();
                tokio::select! {
                    r = &mut persist => r?,
                    () = warm_peer_keys(&mut sec, &others) => persist.await?,
                }
            }
        }
        let mut traffic = Traffic::default();
        self.send_all(&mut sec, &party_of, first, &mut traffic)
            .await?;
        let mut received = Vec::new();
        let finished = loop {
            let opened = match sec.recv_opened().await {
                Ok(o) => o,
                Err(ClientError::Rejected(r)) => {
                    let reason = format!(
                        "round {} {}: {} from {}",
                        r.round, r.message_type, r.reason, r.culprit
                    );
                    return self.fail(&sid, reason, Some(r.culprit.clone())).await;
                }
                Err(e) if e.is_session_closed() => {
                    self.forget(&sid).await;
                    return Err(closed_elsewhere(&sid, &e));
                }
                Err(e) => return Err(e.into()),
            };
            received.push(opened.message_id.clone());
            let Some(&from) = index_of.get(&opened.from) else {
                continue;
            };
            let round = opened.round;
            let step = machine.handle(
                from,
                Incoming {
                    round,
                    message_type: opened.message_type,
                    body: opened.body,
                },
            );
            let step = match step {
                Ok(s) => s,
                Err(e) => {
                    let culprit = e.culprit().and_then(|i| party_of.get(&i).cloned());
                    return self
                        .fail(&sid, format!("round {round}: {e}"), culprit)
                        .await;
                }
            };
            if let Machine::Sign(s) = &machine {
                // Shares made: mark it, then forget the nonce, before the shares leave.
                let nonce_name = format!("nonce/{sid}");
                if !s.holds_nonce() && self.keys.contains(&nonce_name) {
                    self.change(&[(&format!("signed/{sid}"), b"1")], &[&nonce_name])
                        .await?;
                }
            }
            match step {
                Step::Continue(out) => {
                    self.send_all(&mut sec, &party_of, out, &mut traffic)
                        .await?
                }
                Step::Done { output, outgoing } => {
                    self.send_all(&mut sec, &party_of, outgoing, &mut traffic)
                        .await?;
                    break output;
                }
            }
        };

        let outcome = match finished {
            Finished::Keygen(share) => {
                let gpk = share
                    .group_public_key()
                    .map_err(|e| RunError::KeyStore(e.to_string()))?;
                let bytes = share
                    .to_bytes()
                    .map_err(|e| RunError::KeyStore(e.to_string()))?;
                // The seed stays until the session record goes (below): a party that stops
                // before its report is in replays the same DKG, never a new one.
                self.put(&format!("share/{}", hex_of(&gpk)), &bytes).await?;
                self.client.report_completion(&sid, &gpk, &[]).await?;
                Outcome::Keygen {
                    group_public_key: gpk,
                }
            }
            Finished::Signed(signature) => {
                let gpk = match &descriptor.purpose {
                    Purpose::Sign {
                        group_public_key, ..
                    } => group_public_key.clone(),
                    Purpose::Keygen { .. } => Vec::new(),
                };
                self.client
                    .report_completion(&sid, &gpk, &signature)
                    .await?;
                Outcome::Signed { signature }
            }
        };
        for id in &received {
            if let Err(e) = sec.ack(id).await {
                tracing::debug!(session = %sid, error = %e, "ack after completion failed");
            }
        }
        // One write drops the session record with whatever it still kept (seed, marker).
        self.change(
            &[],
            &[
                &format!("session/{sid}"),
                &format!("seed/{sid}"),
                &format!("signed/{sid}"),
            ],
        )
        .await?;
        Ok((outcome, traffic))
    }
}

/// Fetches (and caches in `sec`) the verified keys of `peers`; a failure is left for the
/// send or receive that needs the key to report.
async fn warm_peer_keys(sec: &mut SecureSession, peers: &[&String]) {
    for p in peers {
        if let Err(e) = sec.peer(p).await {
            tracing::debug!(session = %sec.session_id(), peer = %p, error = %e, "peer keys not fetched ahead");
            return;
        }
    }
}

/// Takes a session off the active set when its run ends, however it ends.
struct ActiveGuard(Arc<Mutex<std::collections::HashSet<String>>>, String);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// The session was closed by someone else (another party reported a failure, it expired).
fn closed_elsewhere(sid: &str, e: &ClientError) -> RunError {
    RunError::Failed {
        session: sid.to_string(),
        reason: e.to_string(),
        culprit: e.culprit().map(str::to_string),
    }
}

/// The coordinator's side: creates keygen and signing sessions with signed descriptors and
/// waits for their results. Each descriptor names every party's identity key as the relay's
/// enrollment has it (the coordinator needs the parties enrolled, or bound at login).
pub struct Coordinator {
    client: Client,
    key: IdentityKey,
    /// What each key's keygen said (holders, t, curve), by group public key: a completed
    /// keygen never changes, so it is looked up at the relay once, not at every signing.
    keys: Mutex<HashMap<Vec<u8>, KeyInfo>>,
}

/// A key's holders with their indices, its threshold and its curve.
type KeyInfo = (Vec<(String, u16)>, u16, Curve);

/// What a completed keygen session says about the key it made.
fn key_info_of(s: &cohort_client::SessionSummary) -> Option<KeyInfo> {
    if s.session_type != "keygen" || s.status != "completed" {
        return None;
    }
    let curve = match Descriptor::from_bytes(&s.descriptor).map(|d| d.purpose) {
        Ok(Purpose::Keygen { curve }) => curve,
        _ => return None,
    };
    let parties = s
        .participants
        .iter()
        .map(|p| {
            (
                p.party_id.clone(),
                u16::try_from(p.party_index).unwrap_or(0),
            )
        })
        .collect();
    Some((parties, u16::try_from(s.threshold_t).unwrap_or(0), curve))
}

/// A finished keygen.
#[derive(Debug, Clone)]
pub struct KeygenResult {
    pub session_id: String,
    pub group_public_key: Vec<u8>,
    pub parties: Vec<String>,
}

/// A finished signing.
#[derive(Debug, Clone)]
pub struct SignResult {
    pub session_id: String,
    pub signature: Vec<u8>,
    pub message_hash: [u8; 32],
    pub signers: Vec<String>,
}

impl Coordinator {
    /// `key` must be the identity key `client` logged in with, listed as a coordinator key.
    pub fn new(client: Client, key: IdentityKey) -> Self {
        Coordinator {
            client,
            key,
            keys: Mutex::default(),
        }
    }

    fn known_keys(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, KeyInfo>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn nonce() -> [u8; 16] {
        let mut n = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut n);
        n
    }

    /// Creates a `t`-of-`parties.len()` key on `curve` and waits for it.
    pub async fn keygen(
        &self,
        parties: &[String],
        t: u16,
        curve: Curve,
        timeout: Duration,
    ) -> Result<KeygenResult, RunError> {
        let n = u16::try_from(parties.len()).map_err(|_| RunError::Failed {
            session: String::new(),
            reason: "too many parties".into(),
            culprit: None,
        })?;
        let d = Descriptor {
            purpose: Purpose::Keygen { curve },
            n,
            t,
            parties: parties.to_vec(),
            party_keys: self.client.enrolled_keys(parties).await?,
            nonce: Self::nonce(),
        };
        let (session_id, s) = self.run(d, "keygen", Vec::new(), timeout).await?;
        if let Some(info) = key_info_of(&s) {
            self.known_keys().insert(s.public_key.clone(), info);
        }
        Ok(KeygenResult {
            session_id,
            group_public_key: s.public_key,
            parties: parties.to_vec(),
        })
    }

    /// Finds the completed keygen that made `group_public_key`: its parties by index, t, curve.
    /// Asks the relay once per key (a listing of completed sessions); then from memory.
    pub async fn key_info(
        &self,
        group_public_key: &[u8],
    ) -> Result<(Vec<(String, u16)>, u16, Curve), RunError> {
        if let Some(info) = self.known_keys().get(group_public_key) {
            return Ok(info.clone());
        }
        let sessions = self.client.list_sessions(Some("completed"), 10_000).await?;
        let info = sessions
            .iter()
            .filter(|s| s.public_key == group_public_key)
            .find_map(key_info_of)
            .ok_or_else(|| RunError::Failed {
                session: String::new(),
                reason: format!("no completed keygen made key {}", hex_of(group_public_key)),
                culprit: None,
            })?;
        self.known_keys()
            .insert(group_public_key.to_vec(), info.clone());
        Ok(info)
    }

    /// Signs `message` (its SHA-256) with the key `group_public_key`. `signers` defaults to
    /// the first t holders that are online.
    pub async fn sign(
        &self,
        group_public_key: &[u8],
        message: &[u8],
        description: &str,
        signers: Option<Vec<String>>,
        timeout: Duration,
    ) -> Result<SignResult, RunError> {
        let (holders, t, curve) = self.key_info(group_public_key).await?;
        let chosen: Vec<(String, u16)> = match signers {
            Some(names) => {
                let mut out = Vec::new();
                for n in names {
                    let h = holders
                        .iter()
                        .find(|(p, _)| *p == n)
                        .cloned()
                        .ok_or_else(|| RunError::Failed {
                            session: String::new(),
                            reason: format!("{n} holds no share of this key"),
                            culprit: None,
                        })?;
                    out.push(h);
                }
                out
            }
            None => {
                let online: Vec<String> = self
                    .client
                    .parties("", true)
                    .await?
                    .into_iter()
                    .map(|p| p.party_id)
                    .collect();
                holders
                    .iter()
                    .filter(|(p, _)| online.contains(p))
                    .take(usize::from(t))
                    .cloned()
                    .collect()
            }
        };
        if chosen.len() < usize::from(t) {
            return Err(RunError::Failed {
                session: String::new(),
                reason: format!("{} signers available, the key needs {t}", chosen.len()),
                culprit: None,
            });
        }
        let hash = message_hash(message);
        let parties: Vec<String> = chosen.iter().map(|(p, _)| p.clone()).collect();
        let n = u16::try_from(parties.len()).unwrap_or(u16::MAX);
        let d = Descriptor {
            purpose: Purpose::Sign {
                curve,
                group_public_key: group_public_key.to_vec(),
                message_hash: hash,
                description: description.to_string(),
                signers: chosen,
            },
            n,
            t,
            party_keys: self.client.enrolled_keys(&parties).await?,
            parties: parties.clone(),
            nonce: Self::nonce(),
        };
        let (session_id, s) = self.run(d, "sign", hash.to_vec(), timeout).await?;
        Ok(SignResult {
            session_id,
            signature: s.signature,
            message_hash: hash,
            signers: parties,
        })
    }

    /// Creates a session for descriptor `d`, signed with the coordinator key, and waits for
    /// it to complete. Returns its id and final summary.
    async fn run(
        &self,
        d: Descriptor,
        session_type: &str,
        message_hash: Vec<u8>,
        timeout: Duration,
    ) -> Result<(String, cohort_client::SessionSummary), RunError> {
        let (descriptor, descriptor_signature) = d.sign(&self.key);
        let party_keys = d.identities();
        let created = self
            .client
            .create_session(CreateSession {
                session_type: session_type.into(),
                n: d.n,
                t: d.t,
                parties: d.parties,
                message_hash,
                descriptor,
                descriptor_signature,
                party_keys,
                expires_in: Some(timeout),
                ..Default::default()
            })
            .await?;
        let s = self.wait(&created.session_id, timeout).await?;
        Ok((created.session_id, s))
    }

    /// Polls the session until it closes; a failure comes back with its reason and culprit.
    pub async fn wait(
        &self,
        session_id: &str,
        timeout: Duration,
    ) -> Result<cohort_client::SessionSummary, RunError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            let s = self.client.session(session_id).await?;
            match s.status.as_str() {
                "completed" => return Ok(s),
                "failed" | "expired" => {
                    let culprit = s
                        .failure_reason
                        .split("(culprit: ")
                        .nth(1)
                        .and_then(|r| r.split(')').next())
                        .map(str::to_string);
                    return Err(RunError::Failed {
                        session: session_id.to_string(),
                        reason: format!("{}: {}", s.status, s.failure_reason),
                        culprit,
                    });
                }
                _ => {}
            }
            if start.elapsed() > timeout {
                return Err(RunError::Failed {
                    session: session_id.to_string(),
                    reason: format!(
                        "not finished after {timeout:?}; waiting for {}",
                        s.waiting_for.join(", ")
                    ),
                    culprit: None,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }
}
