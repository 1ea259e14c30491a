//! `Relay`: the application service. It wires a core rule, the store and the wakeups:
//! run the rule in a store transaction, and after the commit wake the subscribers it touched.
//! Fronts call it; it knows no wire format.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cohort_core::delivery::{self, RecipientStatus};
use cohort_core::enrollment::{self, Enrollment};
use cohort_core::identity::{self, IssuedChallenge, IssuedToken, NotificationChannel, Party};
use cohort_core::mailbox::{self, Delivery, DeliveryStatus, MailboxAddr, Message};
use cohort_core::session::{
    self, CreateRequest, DelegateShare, DeviceInfo, JoinTokens, Report, RouteRequest, Session,
    SessionEvent, SessionStatus,
};
use cohort_core::store::{Store, StoreExt};
use cohort_core::{Error, Limits, Millis, Principal, Result};
use rand::RngCore;
use tokio::sync::watch;

use crate::connections::{ConnectionEnd, ConnectionPermit, Connections};
use crate::delivered::Delivered;
use crate::metrics::Metrics;
use crate::notify::{LocalNotifier, Notifier};
use crate::rate::{Action, RateLimits};
use crate::wake::{Subscription, Wakeups};

/// Most resolved tokens kept in memory.
const TOKEN_CACHE_CAP: usize = 100_000;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// A directory entry as a caller may see it.
#[derive(Debug, Clone)]
pub struct PartyView {
    /// Contact details (`notification`) are kept only for coordinators.
    pub party: Party,
    pub online: bool,
}

/// The application service shared by every front.
pub struct Relay {
    store: Arc<dyn Store>,
    limits: Limits,
    coordinator_keys: Vec<[u8; 32]>,
    pub(crate) wakeups: Wakeups,
    notifier: Arc<dyn Notifier>,
    pub(crate) metrics: Metrics,
    /// "Delivered" marks, kept in memory (see `delivered.rs`).
    delivered: Delivered,
    /// Acknowledgments coalesced into one write per batch; started on first use, inside
    /// the runtime.
    acks: std::sync::OnceLock<crate::batch::AckBatcher>,
    /// Resolved tokens, by hash: tokens cannot be revoked before expiry, so caching is exact.
    token_cache: Mutex<HashMap<[u8; 32], (Principal, Millis)>>,
    shutdown: watch::Sender<bool>,
    rates: RateLimits,
    connections: Arc<Connections>,
}

impl Relay {
    pub fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        coordinator_keys: Vec<[u8; 32]>,
    ) -> Arc<Relay> {
        Self::with_notifier(store, limits, coordinator_keys, Arc::new(LocalNotifier))
    }

    /// As [`Relay::new`], telling other nodes of every commit through `notifier`.
    pub fn with_notifier(
        store: Arc<dyn Store>,
        limits: Limits,
        coordinator_keys: Vec<[u8; 32]>,
        notifier: Arc<dyn Notifier>,
    ) -> Arc<Relay> {
        let wakeups = Wakeups::new(limits.stream_recent_messages, limits.stream_recent_bytes);
        let delivered = Delivered::new(limits.max_delivered_marks);
        let metrics = Metrics::default();
        let connections = Connections::new(
            &limits,
            metrics.connections_open.clone(),
            metrics.connections_ended.clone(),
        );
        let rates = RateLimits::new(&limits);
        Arc::new(Relay {
            store,
            limits,
            coordinator_keys,
            notifier,
            wakeups,
            delivered,
            acks: std::sync::OnceLock::new(),
            metrics,
            token_cache: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
            rates,
            connections,
        })
    }

    /// Tells every stream to finish; used on SIGTERM.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Closes the store (flush, checkpoint); call after every front has stopped.
    pub async fn close(&self) -> Result<()> {
        self.store.close().await
    }

    /// Wakes the subscribers of `touched`, here and (through the notifier) on other nodes.
    fn changed(&self, touched: &[MailboxAddr]) {
        if touched.is_empty() {
            return;
        }
        self.wakeups.notify(touched);
        self.notifier.publish(touched);
    }

    /// Another node committed changes to `touched`: wake the subscribers here.
    pub fn changed_elsewhere(&self, touched: &[MailboxAddr]) {
        self.wakeups.notify(touched);
    }

    /// Messages accepted for routing since this relay started.
    pub fn messages_routed(&self) -> u64 {
        self.metrics.messages_routed.get()
    }

    /// Streams (mailboxes, session events) being served right now.
    pub fn live_streams(&self) -> usize {
        self.wakeups.live_subscribers()
    }

    /// Prometheus' text exposition of the relay's metrics.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(self.wakeups.live_subscribers())
    }

    /// Records a refused call: counted by method and code, logged with the party and reason.
    /// Fronts call this for every refusal they answer; never pass a token, key or payload.
    pub fn refused(&self, method: &str, party: Option<&str>, code: &str, reason: &str) {
        self.metrics
            .refusals
            .get_or_create(&vec![
                ("method".to_string(), method.to_string()),
                ("code".to_string(), code.to_string()),
            ])
            .inc();
        let party = party.unwrap_or("-");
        if code == "Internal" || code == "internal" {
            tracing::error!(method, party, code, reason, "call failed");
        } else {
            tracing::info!(method, party, code, reason, "call refused");
        }
    }

    // ---- admission ------------------------------------------------------------------

    /// Checks the rate limits that apply to `action` by `who` (once authenticated) from
    /// `addr`; a refusal is RESOURCE_EXHAUSTED with `retry_after_ms`. Fronts call this before
    /// the work it limits.
    pub fn admit(
        &self,
        action: Action,
        who: Option<&Principal>,
        addr: Option<std::net::IpAddr>,
    ) -> Result<()> {
        self.rates.admit(action, who, addr)
    }

    /// Admits a connection a front accepted from `peer`, or refuses it (counted and logged)
    /// when `max_connections` or `max_connections_per_address` are reached. Hold the permit
    /// while the connection is open.
    pub fn admit_connection(
        &self,
        front: &str,
        peer: std::net::SocketAddr,
    ) -> Result<ConnectionPermit> {
        self.connections.admit(front, peer)
    }

    /// Records that a front closed a connection because of a limit (counted, logged).
    pub fn connection_closed(&self, front: &str, peer: std::net::SocketAddr, why: ConnectionEnd) {
        self.connections.ended_by(front, peer, why);
    }

    /// Connections open now, over every front.
    pub fn open_connections(&self) -> usize {
        self.connections.open_count()
    }

    // ---- identity -------------------------------------------------------------------

    pub async fn challenge(
        &self,
        party_id: String,
        public_key: Vec<u8>,
    ) -> Result<IssuedChallenge> {
        let limits = self.limits.clone();
        let r = random::<64>();
        self.store
            .write(move |tx| {
                identity::issue_challenge(tx, &party_id, &public_key, r, now_ms(), &limits)
            })
            .await
    }

    pub async fn login(
        &self,
        challenge_id: String,
        party_id: String,
        public_key: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<IssuedToken> {
        let limits = self.limits.clone();
        let keys = self.coordinator_keys.clone();
        let token = random::<32>();
        let issued = self
            .store
            .write(move |tx| {
                // The refusal is returned inside a committed transaction: an Err would roll
                // back the rule's delete, and a failed login must still consume its challenge.
                Ok(identity::login(
                    tx,
                    &challenge_id,
                    &party_id,
                    &public_key,
                    &signature,
                    token,
                    &keys,
                    now_ms(),
                    &limits,
                ))
            })
            .await??;
        self.metrics.logins.inc();
        Ok(issued)
    }

    /// Resolves a bearer token, from the cache when possible.
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        let hash = identity::token_hash(token)?;
        let now = now_ms();
        if let Some((p, exp)) = self
            .token_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
        {
            if now <= *exp {
                return Ok(p.clone());
            }
        }
        let token = token.to_string();
        let (p, exp) = self
            .store
            .read(move |v| identity::authenticate_with_expiry(v, &token, now))
            .await?;
        let mut cache = self.token_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= TOKEN_CACHE_CAP {
            cache.retain(|_, (_, e)| *e >= now);
            // Still full of live tokens: start over rather than scan again on every miss, so
            // the scan costs O(1) per insert amortised. Evicted tokens are read from the store.
            if cache.len() >= TOKEN_CACHE_CAP / 2 {
                cache.clear();
            }
        }
        cache.insert(hash, (p.clone(), exp));
        Ok(p)
    }

    // ---- enrollment -----------------------------------------------------------------

    /// Enroll (coordinator only): binds `party_id` to `identity_key`.
    pub async fn enroll(
        &self,
        who: Principal,
        party_id: String,
        identity_key: Vec<u8>,
        role: String,
    ) -> Result<Enrollment> {
        let party = party_id.clone();
        let e = self
            .store
            .write(move |tx| {
                enrollment::enroll(tx, &who, &party_id, &identity_key, &role, now_ms())
            })
            .await?;
        // Enrolling may have rebound the id and revoked its tokens in the store.
        self.forget_tokens_of(&party);
        Ok(e)
    }

    /// Unenroll (coordinator only): returns whether `party_id` was bound to a key.
    pub async fn unenroll(&self, who: Principal, party_id: String) -> Result<bool> {
        let party = party_id.clone();
        let removed = self
            .store
            .write(move |tx| enrollment::unenroll(tx, &who, &party_id))
            .await?;
        self.forget_tokens_of(&party);
        Ok(removed)
    }

    /// ListEnrolled (coordinator only): `party_ids`' enrollments, or all when empty.
    pub async fn enrolled(
        &self,
        who: Principal,
        party_ids: Vec<String>,
    ) -> Result<Vec<Enrollment>> {
        if party_ids.len() > self.limits.max_recipients {
            return Err(Error::invalid(format!(
                "party_ids names more than {} parties",
                self.limits.max_recipients
            )));
        }
        self.store
            .read(move |v| enrollment::list(v, &who, &party_ids))
            .await
    }

    /// Drops cached tokens of `party_id`: the store revoked them, and a cached one would
    /// still resolve until it expired.
    fn forget_tokens_of(&self, party_id: &str) {
        self.token_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (p, _)| p.id != party_id);
    }

    pub async fn register(
        &self,
        who: Principal,
        party_id: String,
        role: String,
        version: String,
        notification: Option<NotificationChannel>,
    ) -> Result<Party> {
        self.store
            .write(move |tx| {
                identity::register(
                    tx,
                    &who,
                    &party_id,
                    &role,
                    &version,
                    notification.clone(),
                    now_ms(),
                )
            })
            .await
    }

    /// Heartbeat; returns the number of messages waiting for the party.
    pub async fn heartbeat(&self, who: Principal, party_id: String) -> Result<u64> {
        self.store
            .write(move |tx| {
                identity::heartbeat(tx, &who, &party_id, now_ms())?;
                let all = mailbox::pending_count_for_owner(tx, &party_id)?;
                let events = mailbox::pending_count(tx, &MailboxAddr::events(&party_id))?;
                Ok(all.saturating_sub(events))
            })
            .await
    }

    /// The directory as `who` may see it: contact details only for coordinators.
    pub async fn parties(
        &self,
        who: &Principal,
        role_filter: String,
        only_online: bool,
    ) -> Result<Vec<PartyView>> {
        let limits = self.limits.clone();
        let now = now_ms();
        let parties = self
            .store
            .read(move |v| identity::list_parties(v, &role_filter, only_online, now, &limits))
            .await?;
        let may_see_contacts = who.coordinator;
        Ok(parties
            .into_iter()
            .map(|mut party| {
                if !may_see_contacts {
                    party.notification = None;
                }
                PartyView {
                    online: party.online(now, &self.limits),
                    party,
                }
            })
            .collect())
    }

    pub async fn publish_encryption_key(
        &self,
        who: Principal,
        key: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<Millis> {
        self.store
            .write(move |tx| identity::publish_encryption_key(tx, &who, &key, &signature, now_ms()))
            .await
    }

    pub async fn encryption_keys(&self, party_ids: Vec<String>) -> Result<Vec<Party>> {
        if party_ids.len() > self.limits.max_recipients {
            return Err(Error::invalid(format!(
                "party_ids names more than {} parties",
                self.limits.max_recipients
            )));
        }
        self.store
            .read(move |v| {
                let mut out = Vec::new();
                for (i, p) in party_ids.iter().enumerate() {
                    cohort_core::validate::party_id(&format!("party_ids[{i}]"), p)?;
                    // Unknown parties are left out, like parties that published no key.
                    if let Some(party) = identity::get_party(v, p)? {
                        out.push(party);
                    }
                }
                Ok(out)
            })
            .await
    }

    // ---- sessions -------------------------------------------------------------------

    /// CreateSession: the session, its join tokens in clear (only when it is new: stored are
    /// their hashes) and whether it is new.
    pub async fn create_session(
        &self,
        who: Principal,
        req: CreateRequest,
    ) -> Result<(Session, JoinTokens, bool)> {
        let limits = self.limits.clone();
        let made = self
            .store
            .write(move |tx| {
                let mut entropy = |b: &mut [u8]| rand::rngs::OsRng.fill_bytes(b);
                session::create(tx, &who, req.clone(), &mut entropy, now_ms(), &limits)
            })
            .await?;
        self.changed(&made.wakeups);
        if made.created {
            self.metrics.sessions_created.inc();
        }
        Ok((made.session, made.join_tokens, made.created))
    }

    pub async fn join(
        &self,
        who: Principal,
        session_id: String,
        party_id: String,
        token: String,
        device: Option<DeviceInfo>,
    ) -> Result<Session> {
        let limits = self.limits.clone();
        let (s, wake) = self
            .store
            .write(move |tx| {
                session::join(
                    tx,
                    &who,
                    &session_id,
                    &party_id,
                    &token,
                    device.clone(),
                    now_ms(),
                    &limits,
                )
            })
            .await?;
        self.changed(&wake);
        Ok(s)
    }

    /// Join and (when `ready`) mark ready in one transaction; returns the session and
    /// `all_ready`.
    pub async fn join_ready(
        &self,
        who: Principal,
        session_id: String,
        party_id: String,
        token: String,
        ready: bool,
    ) -> Result<(Session, bool)> {
        let limits = self.limits.clone();
        let (s, all, wake) = self
            .store
            .write(move |tx| {
                session::join_ready(
                    tx,
                    &who,
                    &session_id,
                    &party_id,
                    &token,
                    None,
                    ready,
                    now_ms(),
                    &limits,
                )
            })
            .await?;
        self.changed(&wake);
        Ok((s, all))
    }

    pub async fn mark_ready(
        &self,
        who: Principal,
        session_id: String,
        party_id: String,
    ) -> Result<bool> {
        let limits = self.limits.clone();
        let (all, wake) = self
            .store
            .write(move |tx| {
                session::mark_ready(tx, &who, &session_id, &party_id, now_ms(), &limits)
            })
            .await?;
        self.changed(&wake);
        Ok(all)
    }

    pub async fn report_completion(
        &self,
        who: Principal,
        session_id: String,
        party_id: String,
        report: Report,
    ) -> Result<bool> {
        let limits = self.limits.clone();
        let (all, wake) = self
            .store
            .write(move |tx| {
                session::report_completion(
                    tx,
                    &who,
                    &session_id,
                    &party_id,
                    report.clone(),
                    now_ms(),
                    &limits,
                )
            })
            .await?;
        self.changed(&wake);
        Ok(all)
    }

    pub async fn report_failure(
        &self,
        who: Principal,
        session_id: String,
        reason: String,
        culprit: String,
    ) -> Result<()> {
        let limits = self.limits.clone();
        let wake = self
            .store
            .write(move |tx| {
                session::report_failure(tx, &who, &session_id, &reason, &culprit, now_ms(), &limits)
            })
            .await?;
        self.changed(&wake);
        Ok(())
    }

    pub async fn session_status(&self, who: Principal, session_id: String) -> Result<Session> {
        self.store
            .read(move |v| session::status(v, &who, &session_id))
            .await
    }

    pub async fn list_sessions(
        &self,
        who: Principal,
        status: Option<SessionStatus>,
        limit: usize,
    ) -> Result<Vec<Session>> {
        self.store
            .read(move |v| session::list(v, &who, status, limit))
            .await
    }

    pub async fn submit_delegate_share(
        &self,
        who: Principal,
        session_id: String,
        share: DelegateShare,
    ) -> Result<()> {
        self.store
            .write(move |tx| {
                session::submit_delegate_share_to(tx, &who, &session_id, share.clone())
            })
            .await
    }

    pub async fn delegate_shares(
        &self,
        who: Principal,
        session_id: String,
    ) -> Result<Vec<DelegateShare>> {
        self.store
            .read(move |v| session::delegate_shares(v, &who, &session_id))
            .await
    }

    /// PublishSessionEvent: returns how many recipients have a live event stream.
    pub async fn publish_event(&self, who: Principal, event: SessionEvent) -> Result<usize> {
        let limits = self.limits.clone();
        let (_, wake) = self
            .store
            .write(move |tx| session::publish(tx, &who, event.clone(), now_ms(), &limits))
            .await?;
        self.changed(&wake);
        Ok(self.wakeups.live_count(&wake))
    }

    // ---- messages -------------------------------------------------------------------

    /// RouteMessage: returns the message id once the commit is durable.
    pub async fn route(&self, who: Principal, req: RouteRequest) -> Result<String> {
        let req = session::validate_route(req, &self.limits)?;
        let limits = self.limits.clone();
        let bytes = req.request().payload.len() as u64;
        let id = mailbox::new_message_id(now_ms());
        let (message, _wake) = self
            .store
            .write(move |tx| session::route_valid(tx, &who, &req, id, now_ms(), &limits))
            .await?;
        // The wakeups are exactly the message's recipients; hand it over in memory too.
        let message = Arc::new(message);
        self.wakeups.deliver(&message);
        let touched: Vec<MailboxAddr> = message.recipients.iter().map(|(a, _)| a.clone()).collect();
        self.notifier.publish(&touched);
        self.metrics.messages_routed.inc();
        self.metrics.payload_bytes.inc_by(bytes);
        Ok(mailbox::message_id_string(&message.id))
    }

    /// Checks that `who` may read `party_id`'s mailbox for `session_id`, and returns it.
    pub(crate) async fn session_mailbox(
        &self,
        who: Principal,
        session_id: String,
        party_id: String,
    ) -> Result<MailboxAddr> {
        self.store
            .read(move |v| delivery::session_mailbox(v, &who, &session_id, &party_id))
            .await
    }

    /// If the session is closed, the error that says why (with the culprit, if one was named).
    pub(crate) async fn session_closed(&self, session_id: String) -> Result<Option<Error>> {
        self.store
            .read(move |v| Ok(session::require(v, &session_id)?.closed_error()))
            .await
    }

    /// Waiting messages after `after_seq` (unchanged), with the mailbox's last seq in the same snapshot: when fewer than
    /// `limit` came back, nothing up to that seq is waiting beyond them.
    pub(crate) async fn peek_with_last_seq(
        &self,
        addr: MailboxAddr,
        after_seq: u64,
        limit: usize,
    ) -> Result<(Vec<Delivery>, u64)> {
        self.store
            .read(move |v| {
                let pending = mailbox::pending(v, &addr, after_seq, limit)?;
                Ok((pending, mailbox::last_seq(v, &addr)?))
            })
            .await
    }

    /// GetPendingMessages: waiting messages of `party_id`'s mailbox in `session_id` created
    /// after `after_timestamp`, at most `pending_page` of them, marked delivered (in memory).
    pub async fn pending_after(
        &self,
        who: Principal,
        session_id: String,
        party_id: String,
        after_timestamp: Millis,
    ) -> Result<Vec<Delivery>> {
        let limit = self.limits.pending_page;
        let (addr, out) = self
            .store
            .read(move |v| {
                let addr = delivery::session_mailbox(v, &who, &session_id, &party_id)?;
                let out = delivery::pending_after(v, &addr, after_timestamp, limit)?;
                Ok((addr, out))
            })
            .await?;
        let seqs: Vec<u64> = out.iter().map(|d| d.seq).collect();
        self.mark_delivered(&addr, &seqs);
        Ok(out)
    }

    /// Records that `seqs` of `addr` were handed to a stream. Kept in memory only: a crash
    /// turns them back into pending, which costs a redelivery receivers drop by id.
    pub(crate) fn mark_delivered(&self, addr: &MailboxAddr, seqs: &[u64]) {
        self.delivered.mark(addr, seqs, now_ms());
        self.metrics.messages_delivered.inc_by(seqs.len() as u64);
    }

    /// Settles a batch of pushed events in one transaction: `shown` are marked delivered,
    /// `expired` (past their session's expiry) removed.
    pub(crate) async fn settle_events(
        &self,
        addr: MailboxAddr,
        shown: Vec<u64>,
        expired: Vec<mailbox::MessageId>,
    ) -> Result<()> {
        self.mark_delivered(&addr, &shown);
        if expired.is_empty() {
            return Ok(());
        }
        self.store
            .write(move |tx| {
                for id in &expired {
                    mailbox::remove_message(tx, id)?;
                }
                Ok(())
            })
            .await
    }

    pub async fn acknowledge(
        &self,
        who: Principal,
        message_id: String,
        party_id: String,
        session_id: String,
        ok: bool,
        error: String,
    ) -> Result<DeliveryStatus> {
        let ack = delivery::Ack {
            who,
            message_id,
            party_id,
            session_id,
            ok,
            error_message: error,
        };
        let batcher = self
            .acks
            .get_or_init(|| crate::batch::AckBatcher::start(self.store.clone()));
        let st = batcher.ack(ack).await?;
        self.delivered.forget(&st.mailbox, st.seq);
        self.metrics.messages_acked.inc();
        Ok(st.status)
    }

    pub async fn message_status(
        &self,
        who: Principal,
        message_id: String,
        session_id: String,
    ) -> Result<(Message, Vec<RecipientStatus>)> {
        let (message, mut recipients) = self
            .store
            .read(move |v| delivery::status(v, &who, &message_id, &session_id))
            .await?;
        for r in &mut recipients {
            self.delivered.overlay(&r.mailbox, r.seq, &mut r.entry);
        }
        Ok((message, recipients))
    }

    pub(crate) fn subscribe(&self, addr: &MailboxAddr) -> Subscription {
        self.wakeups.subscribe(addr)
    }

    // ---- housekeeping ---------------------------------------------------------------

    /// One sweep: expire and fail sessions, purge old ones, drop stale credentials.
    pub async fn sweep(&self) -> Result<session::SweepOutcome> {
        let limits = self.limits.clone();
        let out = self
            .store
            .write(move |tx| {
                let now = now_ms();
                let out = session::sweep(tx, now, &limits, limits.sweep_batch)?;
                identity::sweep_credentials(tx, now, limits.sweep_batch)?;
                Ok(out)
            })
            .await?;
        self.changed(&out.wakeups);
        for id in &out.expired {
            tracing::info!(session = %id, "session expired");
        }
        for id in &out.stalled {
            tracing::info!(session = %id, "session failed: stalled");
        }
        Ok(out)
    }

    /// Runs the sweeper until shutdown.
    pub async fn run_sweeper(self: Arc<Self>, every: std::time::Duration) {
        let mut stop = self.shutdown_signal();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut forget = tokio::time::interval(crate::rate::FORGET_EVERY);
        forget.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::warn!(error = %e, "sweep failed; will retry");
                    }
                }
                _ = forget.tick() => self.rates.forget_idle(),
                _ = stop.changed() => return,
            }
        }
    }
}

// ---- for the streaming engine (`crate::stream`) and its observers ----------------------

impl Relay {
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// After the commit that stored `message`: hand it to live subscribers, tell other nodes,
    /// count it. What `route` does after its commit, for messages stored by a batch.
    pub(crate) fn stored(&self, message: &Arc<Message>) {
        self.wakeups.deliver(message);
        let touched: Vec<MailboxAddr> = message.recipients.iter().map(|(a, _)| a.clone()).collect();
        self.notifier.publish(&touched);
        self.metrics.messages_routed.inc();
        self.metrics
            .payload_bytes
            .inc_by(message.payload.len() as u64);
    }

    /// Message copies handed to recipients since this relay started (streams and
    /// GetPendingMessages).
    pub fn messages_delivered(&self) -> u64 {
        self.metrics.messages_delivered.get()
    }

    /// Message copies acknowledged since this relay started.
    pub fn messages_acked(&self) -> u64 {
        self.metrics.messages_acked.get()
    }
}
