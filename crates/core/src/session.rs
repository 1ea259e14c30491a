//! Sessions: one coordinated run of a multi-party protocol, and the events it publishes.
//!
//! Lifecycle: `created -> in_progress -> completed | failed | expired`. Every participant
//! is named with its identity key and gets a join token bound to it: only that key may join
//! as that participant, and only with that token (joining again with it is idempotent: a
//! party that lost the answer may retry). Tokens are handed out once, at creation (to the
//! creator, and each to its own party in its `session_created` event), and stored only as
//! their SHA-256. `all_ready` starts the session; completion reports must agree (same
//! public key, same signature) or the session fails. A session that
//! makes no progress for the stall timeout fails and names whom it was waiting for.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::codec::{decode, encode, Key};
use crate::cursor;
use crate::enrollment;
use crate::error::{Error, Result};
use crate::identity::{self, Principal};
use crate::limits::{Limits, Millis};
use crate::mailbox::{self, MailboxAddr, Message, MessageId, Outgoing};
use crate::store::{Table, Tx, View};
use crate::validate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionStatus {
    Created,
    InProgress,
    Completed,
    Failed,
    Expired,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Created => "created",
            SessionStatus::InProgress => "in_progress",
            SessionStatus::Completed => "completed",
            SessionStatus::Failed => "failed",
            SessionStatus::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => SessionStatus::Created,
            "in_progress" => SessionStatus::InProgress,
            "completed" => SessionStatus::Completed,
            "failed" => SessionStatus::Failed,
            "expired" => SessionStatus::Expired,
            _ => return None,
        })
    }
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            SessionStatus::Completed | SessionStatus::Failed | SessionStatus::Expired
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeviceInfo {
    pub device_type: String,
    pub device_id: String,
    pub platform: String,
    pub app_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub party_id: String,
    /// 1-based: FROST identifiers and most threshold libraries want non-zero indices.
    pub index: u16,
    /// SHA-256 of the join token; the token itself is never stored.
    pub join_token_hash: [u8; 32],
    /// The only key that may join as this participant: as the creator named it, or the key
    /// the party id was enrolled to when the session was created.
    pub identity_key: [u8; 32],
    pub joined: bool,
    pub ready: bool,
    pub device: Option<DeviceInfo>,
    pub report: Option<Report>,
    /// Highest round this party has sent a message for (0 = none yet).
    pub last_round: i32,
    pub offline_mode: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegateShare {
    pub party_id: String,
    pub encrypted_share: Vec<u8>,
    pub public_key: Vec<u8>,
    pub party_index: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub session_type: String,
    pub n: u16,
    pub t: u16,
    pub participants: Vec<Participant>,
    pub message_hash: Vec<u8>,
    pub descriptor: Vec<u8>,
    pub descriptor_signature: Vec<u8>,
    pub status: SessionStatus,
    pub creator: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub last_progress_at: Millis,
    pub closed_at: Millis,
    pub failure_reason: String,
    /// The party a participant blamed when it reported the failure (empty: nobody named).
    pub failure_culprit: String,
    pub waiting_for: Vec<String>,
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
    pub result: Vec<u8>,
    pub delegate_shares: Vec<DelegateShare>,
}

impl Session {
    pub fn participant(&self, party_id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.party_id == party_id)
    }
    fn participant_mut(&mut self, party_id: &str) -> Option<&mut Participant> {
        self.participants
            .iter_mut()
            .find(|p| p.party_id == party_id)
    }
    pub fn is_participant(&self, party_id: &str) -> bool {
        self.participant(party_id).is_some()
    }
    /// The caller's participant entry: its id is a participant's and it logged in with the
    /// identity key the session names for that participant. A key that took the id some
    /// other way (an open-enrollment squatter) acts as nobody here.
    pub fn require_participant(&self, who: &Principal) -> Result<&Participant> {
        let p = self.participant(&who.id).ok_or_else(|| {
            Error::denied(format!(
                "party {:?} is not a participant of session {}",
                who.id, self.id
            ))
        })?;
        if p.identity_key != who.identity_key {
            return Err(Error::denied(format!(
                "session {} names another identity key for {:?} than the one this caller \
                 logged in with; only that key may act as {:?} in it",
                self.id, who.id, who.id
            )));
        }
        Ok(p)
    }
    fn require_open(&self) -> Result<()> {
        match self.closed_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    /// Why the session no longer takes part in anything, as the error callers get: the
    /// status, the reason, and the culprit as a field of its own. `None` while open.
    pub fn closed_error(&self) -> Option<Error> {
        if !self.status.is_closed() {
            return None;
        }
        let mut why = format!("session {} is {}", self.id, self.status.as_str());
        if !self.failure_reason.is_empty() {
            why.push_str(": ");
            why.push_str(&self.failure_reason);
        }
        let e = Error::precondition(why);
        Some(if self.failure_culprit.is_empty() {
            e
        } else {
            e.with_culprit(self.failure_culprit.clone())
        })
    }
    /// May `who` read this session's status? Participants (with the key the session
    /// names), its creator and coordinators.
    pub fn may_view(&self, who: &Principal) -> bool {
        who.coordinator || who.id == self.creator || self.require_participant(who).is_ok()
    }
    fn stall_timeout(&self, limits: &Limits) -> Millis {
        if self.participants.iter().any(|p| p.offline_mode) {
            limits.offline_stall_timeout_ms
        } else {
            limits.stall_timeout_ms
        }
    }
    /// The parties the others are waiting for, given the lifecycle stage.
    pub fn compute_waiting_for(&self) -> Vec<String> {
        let pick = |f: &dyn Fn(&Participant) -> bool| -> Vec<String> {
            self.participants
                .iter()
                .filter(|p| f(p))
                .map(|p| p.party_id.clone())
                .collect()
        };
        match self.status {
            SessionStatus::Created => {
                let not_joined = pick(&|p| !p.joined);
                if !not_joined.is_empty() {
                    return not_joined;
                }
                pick(&|p| !p.ready)
            }
            SessionStatus::InProgress => {
                let open = |p: &Participant| p.report.is_none();
                let max_round = self
                    .participants
                    .iter()
                    .filter(|p| open(p))
                    .map(|p| p.last_round)
                    .max()
                    .unwrap_or(0);
                let behind = pick(&|p| open(p) && p.last_round < max_round);
                if !behind.is_empty() {
                    return behind;
                }
                pick(&|p| open(p))
            }
            _ => Vec::new(),
        }
    }
}

/// A session lifecycle event, as published to the parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub event_id: String,
    pub event_type: String,
    pub session_id: String,
    pub n: i32,
    pub t: i32,
    pub selected_parties: Vec<String>,
    /// Only the recipient's own token, never another party's.
    pub join_tokens: Vec<(String, String)>,
    pub message_hash: Vec<u8>,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub delegate_share: Option<DelegateShare>,
}

pub const SESSION_CREATED: &str = "session_created";
pub const PARTICIPANT_JOINED: &str = "participant_joined";
pub const SESSION_STARTED: &str = "session_started";
pub const SESSION_COMPLETED: &str = "session_completed";
pub const SESSION_FAILED: &str = "session_failed";
pub const SESSION_EXPIRED: &str = "session_expired";

/// The sender id of events Cohort itself publishes.
pub const RELAY_SENDER: &str = "cohort";
/// The message type of a stored session event.
pub const EVENT_MESSAGE_TYPE: &str = "session_event";

/// Mailboxes that received something in a transaction: the server wakes their subscribers
/// after the commit.
pub type Wakeups = Vec<MailboxAddr>;

fn session_key(id: &str) -> Vec<u8> {
    id.as_bytes().to_vec()
}

pub fn get(view: &dyn View, id: &str) -> Result<Option<Session>> {
    view.get(Table::Sessions, &session_key(id))?
        .map(|b| decode(&b))
        .transpose()
}

pub fn require(view: &dyn View, id: &str) -> Result<Session> {
    validate::session_id("session_id", id)?;
    get(view, id)?.ok_or_else(|| Error::not_found(format!("session {id} not found")))
}

fn put(tx: &mut dyn Tx, s: &Session) -> Result<()> {
    tx.put(Table::Sessions, &session_key(&s.id), &encode(s)?)
}

/// Stores `event` in the events mailbox of each recipient. Returns the wakeups. Each copy
/// keeps only its recipient's own join token: no party's events mailbox (and so no stored
/// copy) holds another party's token, and a copy is removed once its recipient settles it.
pub fn deliver_event(
    tx: &mut dyn Tx,
    event: &SessionEvent,
    recipients: &[String],
    now: Millis,
    limits: &Limits,
) -> Result<Wakeups> {
    let mut wakeups = Vec::with_capacity(recipients.len());
    for r in recipients {
        let mut ev = event.clone();
        ev.join_tokens = event
            .join_tokens
            .iter()
            .filter(|(pid, _)| pid == r)
            .cloned()
            .collect();
        // Each recipient's copy is its own stored message, and its id is the event id the
        // recipient sees: acknowledging that id (AcknowledgeMessage) consumes the copy.
        let id = mailbox::new_message_id(now);
        ev.event_id = mailbox::message_id_string(&id);
        let addr = MailboxAddr::events(r);
        let expires_at = if event.expires_at > 0 {
            event.expires_at
        } else {
            now + limits.message_ttl_ms
        };
        let out = Outgoing {
            sender: RELAY_SENDER.into(),
            session_id: event.session_id.clone(),
            round: 0,
            message_type: EVENT_MESSAGE_TYPE.into(),
            is_broadcast: false,
            payload: encode(&ev)?.into(),
            expires_at,
        };
        mailbox::append(
            tx,
            out,
            std::slice::from_ref(&addr),
            id,
            now,
            limits.max_mailbox_depth,
        )?;
        wakeups.push(addr);
    }
    Ok(wakeups)
}

fn event_for(session: &Session, event_type: &str, now: Millis) -> SessionEvent {
    SessionEvent {
        event_id: uuid::Uuid::from_bytes(mailbox::new_message_id(now)).to_string(),
        event_type: event_type.into(),
        session_id: session.id.clone(),
        n: i32::from(session.n),
        t: i32::from(session.t),
        selected_parties: session
            .participants
            .iter()
            .map(|p| p.party_id.clone())
            .collect(),
        join_tokens: Vec::new(),
        message_hash: session.message_hash.clone(),
        created_at: session.created_at,
        expires_at: session.expires_at,
        delegate_share: None,
    }
}

fn publish_lifecycle(
    tx: &mut dyn Tx,
    s: &Session,
    event_type: &str,
    now: Millis,
    limits: &Limits,
) -> Result<Wakeups> {
    publish_lifecycle_with_tokens(tx, s, event_type, Vec::new(), now, limits)
}

/// As [`publish_lifecycle`], each party's copy carrying its own token from `join_tokens`
/// (only `session_created` does: the tokens exist in clear only while the session is made).
fn publish_lifecycle_with_tokens(
    tx: &mut dyn Tx,
    s: &Session,
    event_type: &str,
    join_tokens: JoinTokens,
    now: Millis,
    limits: &Limits,
) -> Result<Wakeups> {
    let mut ev = event_for(s, event_type, now);
    ev.join_tokens = join_tokens;
    let recipients: Vec<String> = s.participants.iter().map(|p| p.party_id.clone()).collect();
    deliver_event(tx, &ev, &recipients, now, limits)
}

/// `(party id, join token)` for each participant, in clear: exists only in the answer to the
/// creator and in each party's own `session_created` event.
pub type JoinTokens = Vec<(String, String)>;

/// The stored form of a join token.
pub fn join_token_hash(join_token: &str) -> [u8; 32] {
    Sha256::digest(join_token.as_bytes()).into()
}

/// What a coordinator asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub session_type: String,
    pub n: i32,
    pub t: i32,
    pub parties: Vec<String>,
    pub role_filter: String,
    pub message_hash: Vec<u8>,
    pub expires_in_ms: Millis,
    pub idempotency_key: String,
    pub descriptor: Vec<u8>,
    pub descriptor_signature: Vec<u8>,
    /// Party id -> the identity key that alone may join as it. Parties left out get the key
    /// their id is enrolled to.
    pub party_keys: Vec<(String, Vec<u8>)>,
}

/// What [`create`] made (or found, for a repeated idempotency key).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session: Session,
    /// The join tokens in clear, for the creator. Empty when `created` is false: a session
    /// made earlier keeps only their hashes.
    pub join_tokens: JoinTokens,
    /// False when an earlier call with the same idempotency key made the session.
    pub created: bool,
    pub wakeups: Wakeups,
}

/// `random` supplies fresh entropy: 16 bytes for the session id, 16 per join token.
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);
}

impl<F: FnMut(&mut [u8])> Entropy for F {
    fn fill(&mut self, buf: &mut [u8]) {
        self(buf)
    }
}

/// CreateSession. Returns the session (new or, for a repeated idempotency key, the one the
/// first call made), its join tokens if new, and the wakeups.
pub fn create(
    tx: &mut dyn Tx,
    who: &Principal,
    req: CreateRequest,
    entropy: &mut dyn Entropy,
    now: Millis,
    limits: &Limits,
) -> Result<NewSession> {
    who.must_be_coordinator("creating a session")?;
    validate::label("session_type", &req.session_type, false)?;
    validate::text("idempotency_key", &req.idempotency_key, 128)?;
    validate::text(
        "message_hash",
        &String::from_utf8_lossy(&req.message_hash),
        1024,
    )?;
    if req.descriptor.len() > 64 * 1024 {
        return Err(Error::invalid("descriptor is larger than 64 KiB"));
    }
    let max_n = i32::from(limits.max_session_parties);
    if !(1 <= req.t && req.t <= req.n && req.n <= max_n) {
        return Err(Error::invalid(format!(
            "threshold_t {} and threshold_n {} must satisfy 1 <= t <= n <= {max_n}",
            req.t, req.n
        )));
    }
    let idem_key = if req.idempotency_key.is_empty() {
        None
    } else {
        Some(
            Key::new()
                .part(who.id.as_bytes())?
                .part(req.idempotency_key.as_bytes())?
                .build(),
        )
    };
    if let Some(k) = &idem_key {
        if let Some(id) = tx.get(Table::SessionIdempotency, k)? {
            // A session purged after retention frees its key.
            if let Some(s) = get(tx, &String::from_utf8_lossy(&id))? {
                return Ok(NewSession {
                    session: s,
                    join_tokens: Vec::new(),
                    created: false,
                    wakeups: Vec::new(),
                });
            }
        }
    }
    if req.expires_in_ms < 0 {
        return Err(Error::invalid(format!(
            "expires_in_ms is {}; give a positive number of ms, or 0 for the default ({} ms)",
            req.expires_in_ms, limits.session_ttl_ms
        )));
    }
    let ttl = if req.expires_in_ms == 0 {
        limits.session_ttl_ms
    } else {
        req.expires_in_ms
    };
    if ttl > limits.max_session_ttl_ms {
        return Err(Error::invalid(format!(
            "expires_in_ms {ttl} exceeds the limit of {} ms",
            limits.max_session_ttl_ms
        )));
    }
    let n = usize::try_from(req.n).unwrap_or(0);
    let selected: Vec<identity::Party> = if !req.parties.is_empty() {
        if req.parties.len() != n {
            return Err(Error::invalid(format!(
                "parties lists {} parties but threshold_n is {n}",
                req.parties.len()
            )));
        }
        let mut out = Vec::with_capacity(n);
        for (i, pid) in req.parties.iter().enumerate() {
            validate::party_id(&format!("parties[{i}]"), pid)?;
            if req.parties[..i].contains(pid) {
                return Err(Error::invalid(format!("parties lists {pid:?} twice")));
            }
            out.push(identity::require_party(tx, pid)?);
        }
        out
    } else {
        if req.role_filter.is_empty() {
            return Err(Error::invalid("give either parties or role_filter"));
        }
        let mut online = identity::list_parties(tx, &req.role_filter, true, now, limits)?;
        if online.len() < n {
            return Err(Error::precondition(format!(
                "only {} online parties with role {:?}; the session needs {n}",
                online.len(),
                req.role_filter
            )));
        }
        online.sort_by(|a, b| b.last_seen_at.cmp(&a.last_seen_at).then(a.id.cmp(&b.id)));
        online.truncate(n);
        online.sort_by(|a, b| a.id.cmp(&b.id));
        online
    };

    let keys = participant_keys(tx, &selected, &req.party_keys)?;

    let mut id_bytes = [0u8; 16];
    entropy.fill(&mut id_bytes);
    let id = uuid::Builder::from_random_bytes(id_bytes)
        .into_uuid()
        .to_string();
    let mut join_tokens = Vec::with_capacity(selected.len());
    let mut participants = Vec::with_capacity(selected.len());
    for (i, (p, identity_key)) in selected.iter().zip(keys).enumerate() {
        let mut tok = [0u8; 16];
        entropy.fill(&mut tok);
        let token = hex::encode(tok);
        participants.push(Participant {
            party_id: p.id.clone(),
            index: u16::try_from(i + 1).unwrap_or(u16::MAX),
            join_token_hash: join_token_hash(&token),
            identity_key,
            joined: false,
            ready: false,
            device: None,
            report: None,
            last_round: 0,
            offline_mode: p.offline_mode(),
        });
        join_tokens.push((p.id.clone(), token));
    }
    let s = Session {
        id: id.clone(),
        session_type: req.session_type,
        n: u16::try_from(req.n).unwrap_or(u16::MAX),
        t: u16::try_from(req.t).unwrap_or(u16::MAX),
        participants,
        message_hash: req.message_hash,
        descriptor: req.descriptor,
        descriptor_signature: req.descriptor_signature,
        status: SessionStatus::Created,
        creator: who.id.clone(),
        created_at: now,
        expires_at: now + ttl,
        last_progress_at: now,
        closed_at: 0,
        failure_reason: String::new(),
        failure_culprit: String::new(),
        waiting_for: Vec::new(),
        public_key: Vec::new(),
        signature: Vec::new(),
        result: Vec::new(),
        delegate_shares: Vec::new(),
    };
    put(tx, &s)?;
    tx.put(Table::OpenSessions, &session_key(&id), &[])?;
    if let Some(k) = idem_key {
        tx.put(Table::SessionIdempotency, &k, id.as_bytes())?;
    }
    let wakeups =
        publish_lifecycle_with_tokens(tx, &s, SESSION_CREATED, join_tokens.clone(), now, limits)?;
    Ok(NewSession {
        session: s,
        join_tokens,
        created: true,
        wakeups,
    })
}

/// The identity key of each selected party: the one the creator named in `party_keys`, or
/// else the key its id is bound to. Every entry of `party_keys` must name a selected party.
fn participant_keys(
    view: &dyn View,
    selected: &[identity::Party],
    party_keys: &[(String, Vec<u8>)],
) -> Result<Vec<[u8; 32]>> {
    if party_keys.len() > selected.len() {
        return Err(Error::invalid(format!(
            "party_keys has {} entries for {} participants",
            party_keys.len(),
            selected.len()
        )));
    }
    for (i, (pid, key)) in party_keys.iter().enumerate() {
        if !selected.iter().any(|p| &p.id == pid) {
            return Err(Error::invalid(format!(
                "party_keys names {pid:?}, which is not a participant of the session"
            )));
        }
        if key.len() != 32 {
            return Err(Error::invalid(format!(
                "party_keys[{pid:?}] is {} bytes; an Ed25519 key is 32",
                key.len()
            )));
        }
        if party_keys[..i].iter().any(|(other, _)| other == pid) {
            return Err(Error::invalid(format!("party_keys names {pid:?} twice")));
        }
    }
    selected
        .iter()
        .map(|p| {
            if let Some((_, key)) = party_keys.iter().find(|(pid, _)| *pid == p.id) {
                let mut k = [0u8; 32];
                k.copy_from_slice(key);
                return Ok(k);
            }
            enrollment::identity_key_of(view, &p.id)?.ok_or_else(|| {
                Error::precondition(format!(
                    "party {:?} is bound to no identity key (unenrolled); enroll it or name its key in party_keys",
                    p.id
                ))
            })
        })
        .collect()
}

/// JoinSession with the party's own join token. Joining again with the same token is
/// allowed (a restarted party rejoins); nobody else can use it.
#[allow(clippy::too_many_arguments)]
pub fn join(
    tx: &mut dyn Tx,
    who: &Principal,
    session_id: &str,
    party_id: &str,
    join_token: &str,
    device: Option<DeviceInfo>,
    now: Millis,
    limits: &Limits,
) -> Result<(Session, Wakeups)> {
    validate::party_id("party_id", party_id)?;
    who.must_be("party_id", party_id)?;
    if let Some(d) = &device {
        for (f, v) in [
            ("device_info.device_type", &d.device_type),
            ("device_info.device_id", &d.device_id),
            ("device_info.platform", &d.platform),
            ("device_info.app_version", &d.app_version),
        ] {
            validate::text(f, v, 128)?;
        }
    }
    let mut s = require(tx, session_id)?;
    s.require_participant(who)?;
    s.require_open()?;
    let p = s
        .participant_mut(party_id)
        .ok_or_else(|| Error::internal("participant vanished"))?;
    let ok: bool = p.join_token_hash.ct_eq(&join_token_hash(join_token)).into();
    if !ok {
        return Err(Error::denied(format!(
            "join_token is not the one issued to {party_id:?} for this session"
        )));
    }
    let first = !p.joined;
    p.joined = true;
    if device.is_some() {
        p.device = device;
    }
    s.last_progress_at = now;
    put(tx, &s)?;
    let wakeups = if first {
        publish_lifecycle(tx, &s, PARTICIPANT_JOINED, now, limits)?
    } else {
        Vec::new()
    };
    Ok((s, wakeups))
}

/// MarkPartyReady. Returns whether everyone is now ready; the last one starts the session.
pub fn mark_ready(
    tx: &mut dyn Tx,
    who: &Principal,
    session_id: &str,
    party_id: &str,
    now: Millis,
    limits: &Limits,
) -> Result<(bool, Wakeups)> {
    who.must_be("party_id", party_id)?;
    let mut s = require(tx, session_id)?;
    s.require_participant(who)?;
    s.require_open()?;
    let p = s
        .participant_mut(party_id)
        .ok_or_else(|| Error::internal("participant vanished"))?;
    if !p.joined {
        return Err(Error::precondition(format!(
            "party {party_id:?} must join session {session_id} before it is ready"
        )));
    }
    p.ready = true;
    s.last_progress_at = now;
    let all_ready = s.participants.iter().all(|p| p.ready);
    let mut wakeups = Vec::new();
    if all_ready && s.status == SessionStatus::Created {
        s.status = SessionStatus::InProgress;
        put(tx, &s)?;
        wakeups = publish_lifecycle(tx, &s, SESSION_STARTED, now, limits)?;
    } else {
        put(tx, &s)?;
    }
    Ok((all_ready, wakeups))
}

/// Join and, when `ready`, mark ready, in one transaction: a party that checks the
/// session's signed descriptor after joining saves two round trips (it reports a failure
/// if the descriptor does not hold, which fails the session whatever its readiness).
/// Returns the session as it stands after both, and `all_ready`.
#[allow(clippy::too_many_arguments)]
pub fn join_ready(
    tx: &mut dyn Tx,
    who: &Principal,
    session_id: &str,
    party_id: &str,
    join_token: &str,
    device: Option<DeviceInfo>,
    ready: bool,
    now: Millis,
    limits: &Limits,
) -> Result<(Session, bool, Wakeups)> {
    let (s, mut wakeups) = join(
        tx, who, session_id, party_id, join_token, device, now, limits,
    )?;
    if !ready {
        let all = s.participants.iter().all(|p| p.ready);
        return Ok((s, all, wakeups));
    }
    let (all, more) = mark_ready(tx, who, session_id, party_id, now, limits)?;
    wakeups.extend(more);
    Ok((require(tx, session_id)?, all, wakeups))
}

/// What RouteMessage asks for.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    pub session_id: String,
    pub from_party: String,
    pub to_parties: Vec<String>,
    pub round: i32,
    pub message_type: String,
    pub payload: Bytes,
}

/// A [`RouteRequest`] that passed [`validate_route`]: the relay validates once, off the
/// store's writer, and the rule takes only what was validated.
#[derive(Debug, Clone)]
pub struct ValidRoute(RouteRequest);

impl ValidRoute {
    pub fn request(&self) -> &RouteRequest {
        &self.0
    }
}

/// Checks a RouteMessage's shape without reading the store (sizes, ids, labels).
pub fn validate_route(req: RouteRequest, limits: &Limits) -> Result<ValidRoute> {
    validate::session_id("session_id", &req.session_id)?;
    validate::party_id("from_party", &req.from_party)?;
    validate::label("message_type", &req.message_type, true)?;
    if req.payload.len() > limits.max_payload_bytes {
        return Err(Error::exhausted(format!(
            "payload is {} bytes; the limit is {} (max_payload_bytes)",
            req.payload.len(),
            limits.max_payload_bytes
        )));
    }
    if req.to_parties.len() > limits.max_recipients {
        return Err(Error::exhausted(format!(
            "to_parties names {} recipients; the limit is {}",
            req.to_parties.len(),
            limits.max_recipients
        )));
    }
    if req.round < 0 {
        return Err(Error::invalid("round_number must not be negative"));
    }
    for (i, p) in req.to_parties.iter().enumerate() {
        validate::party_id(&format!("to_parties[{i}]"), p)?;
    }
    Ok(ValidRoute(req))
}

/// RouteMessage: stores a message for each recipient within the session. Empty `to_parties`
/// means every other participant (a broadcast).
pub fn route(
    tx: &mut dyn Tx,
    who: &Principal,
    req: &RouteRequest,
    id: MessageId,
    now: Millis,
    limits: &Limits,
) -> Result<(Message, Wakeups)> {
    let valid = validate_route(req.clone(), limits)?;
    route_valid(tx, who, &valid, id, now, limits)
}

/// [`route`] for a request already validated. Borrows it, so a store may run it again.
pub fn route_valid(
    tx: &mut dyn Tx,
    who: &Principal,
    req: &ValidRoute,
    id: MessageId,
    now: Millis,
    limits: &Limits,
) -> Result<(Message, Wakeups)> {
    let req = &req.0;
    who.must_be("from_party", &req.from_party)?;
    let mut s = require(tx, &req.session_id)?;
    s.require_participant(who)?;
    s.require_open()?;
    let is_broadcast = req.to_parties.is_empty();
    let recipients: Vec<MailboxAddr> = if is_broadcast {
        s.participants
            .iter()
            .filter(|p| p.party_id != req.from_party)
            .map(|p| MailboxAddr::session(&p.party_id, &s.id))
            .collect()
    } else {
        let mut out = Vec::with_capacity(req.to_parties.len());
        for (i, to) in req.to_parties.iter().enumerate() {
            if !s.is_participant(to) {
                return Err(Error::denied(format!(
                    "to_parties[{i}] {to:?} is not a participant of session {}",
                    s.id
                )));
            }
            if to == &req.from_party {
                return Err(Error::invalid(format!(
                    "to_parties[{i}] is the sender itself"
                )));
            }
            if req.to_parties[..i].contains(to) {
                return Err(Error::invalid(format!("to_parties names {to:?} twice")));
            }
            out.push(MailboxAddr::session(to, &s.id));
        }
        out
    };
    let out = Outgoing {
        sender: req.from_party.clone(),
        session_id: s.id.clone(),
        round: req.round,
        message_type: req.message_type.clone(),
        is_broadcast,
        payload: req.payload.clone(),
        expires_at: s.expires_at,
    };
    let message = mailbox::append(tx, out, &recipients, id, now, limits.max_mailbox_depth)?;
    // Progress: a stalled-session timer restarts; only rewrite the session when it changed.
    let p = s
        .participant_mut(&req.from_party)
        .ok_or_else(|| Error::internal("participant vanished"))?;
    if p.last_round < req.round || now - s.last_progress_at > 1000 {
        let p = s
            .participant_mut(&req.from_party)
            .ok_or_else(|| Error::internal("participant vanished"))?;
        p.last_round = p.last_round.max(req.round);
        s.last_progress_at = now;
        put(tx, &s)?;
    }
    Ok((message, recipients))
}

/// ReportCompletion. When every participant has reported, the session completes if all
/// reports agree and fails otherwise. Returns `all_completed`.
pub fn report_completion(
    tx: &mut dyn Tx,
    who: &Principal,
    session_id: &str,
    party_id: &str,
    report: Report,
    now: Millis,
    limits: &Limits,
) -> Result<(bool, Wakeups)> {
    who.must_be("party_id", party_id)?;
    if report.public_key.len() > 1024 || report.signature.len() > 1024 {
        return Err(Error::invalid(
            "public_key and signature are at most 1024 bytes",
        ));
    }
    let mut s = require(tx, session_id)?;
    s.require_participant(who)?;
    s.require_open()?;
    let p = s
        .participant_mut(party_id)
        .ok_or_else(|| Error::internal("participant vanished"))?;
    if !p.joined {
        return Err(Error::precondition(format!(
            "party {party_id:?} has not joined session {session_id}"
        )));
    }
    if let Some(prev) = &p.report {
        if prev != &report {
            return Err(Error::exists(format!(
                "party {party_id:?} already reported a different result"
            )));
        }
    }
    p.report = Some(report);
    s.last_progress_at = now;
    let all = s.participants.iter().all(|p| p.report.is_some());
    if !all {
        put(tx, &s)?;
        return Ok((false, Vec::new()));
    }
    let first = s.participants[0]
        .report
        .clone()
        .ok_or_else(|| Error::internal("report vanished"))?;
    let dissent: Vec<String> = s
        .participants
        .iter()
        .filter(|p| p.report.as_ref() != Some(&first))
        .map(|p| p.party_id.clone())
        .collect();
    let wakeups = if dissent.is_empty() {
        s.public_key = first.public_key;
        s.signature = first.signature;
        close(
            tx,
            &mut s,
            SessionStatus::Completed,
            String::new(),
            now,
            limits,
        )?
    } else {
        let reason = format!(
            "participants reported different results: {} disagree with {}",
            dissent.join(", "),
            s.participants[0].party_id
        );
        close(tx, &mut s, SessionStatus::Failed, reason, now, limits)?
    };
    Ok((true, wakeups))
}

/// Moves a session to a closed status: its undelivered messages fail, events go out.
pub fn close(
    tx: &mut dyn Tx,
    s: &mut Session,
    status: SessionStatus,
    reason: String,
    now: Millis,
    limits: &Limits,
) -> Result<Wakeups> {
    s.waiting_for = if status == SessionStatus::Completed {
        Vec::new()
    } else {
        s.compute_waiting_for()
    };
    s.status = status;
    s.failure_reason = reason;
    s.closed_at = now;
    put(tx, s)?;
    tx.delete(Table::OpenSessions, &session_key(&s.id))?;
    tx.put(
        Table::Purge,
        &Key::new()
            .u64(u64::try_from(now + limits.retention_ms).unwrap_or(0))
            .part(s.id.as_bytes())?
            .build(),
        &[],
    )?;
    let why = format!("session {}", status.as_str());
    for p in &s.participants {
        mailbox::fail_pending(tx, &MailboxAddr::session(&p.party_id, &s.id), &why, now)?;
    }
    let event_type = match status {
        SessionStatus::Completed => SESSION_COMPLETED,
        SessionStatus::Expired => SESSION_EXPIRED,
        _ => SESSION_FAILED,
    };
    let mut wakeups = publish_lifecycle(tx, s, event_type, now, limits)?;
    // Wake the session's message streams too, so they see the session closed and end.
    wakeups.extend(
        s.participants
            .iter()
            .map(|p| MailboxAddr::session(&p.party_id, &s.id)),
    );
    Ok(wakeups)
}

/// A participant reports that the protocol failed (a bad signature, a tampered message),
/// naming the `culprit` (a participant's id, or empty). The session fails at once.
pub fn report_failure(
    tx: &mut dyn Tx,
    who: &Principal,
    session_id: &str,
    reason: &str,
    culprit: &str,
    now: Millis,
    limits: &Limits,
) -> Result<Wakeups> {
    validate::text("reason", reason, 1024)?;
    validate::text("culprit", culprit, 128)?;
    let mut s = require(tx, session_id)?;
    s.require_participant(who)?;
    s.require_open()?;
    if !culprit.is_empty() && !s.is_participant(culprit) && culprit != s.creator {
        return Err(Error::invalid(format!(
            "culprit {culprit:?} is neither a participant nor the creator of session {session_id}"
        )));
    }
    s.failure_culprit = culprit.to_string();
    close(
        tx,
        &mut s,
        SessionStatus::Failed,
        if culprit.is_empty() {
            format!("{} reported: {reason}", who.id)
        } else {
            format!("{} reported: {reason} (culprit: {culprit})", who.id)
        },
        now,
        limits,
    )
}

/// SubmitDelegateShare into session `session_id`.
pub fn submit_delegate_share_to(
    tx: &mut dyn Tx,
    who: &Principal,
    session_id: &str,
    share: DelegateShare,
) -> Result<()> {
    who.must_be("party_id", &share.party_id)?;
    if share.encrypted_share.len() > 64 * 1024 || share.public_key.len() > 1024 {
        return Err(Error::invalid(
            "encrypted_share is at most 64 KiB and public_key at most 1 KiB",
        ));
    }
    let mut s = require(tx, session_id)?;
    let p = s.require_participant(who)?;
    if share.party_index != 0 && share.party_index != i32::from(p.index) {
        return Err(Error::invalid(format!(
            "party_index {} is not {:?}'s index {} in this session",
            share.party_index, who.id, p.index
        )));
    }
    s.delegate_shares.retain(|d| d.party_id != share.party_id);
    s.delegate_shares.push(share);
    put(tx, &s)
}

/// The delegate shares of a session, for its creator only.
pub fn delegate_shares(
    view: &dyn View,
    who: &Principal,
    session_id: &str,
) -> Result<Vec<DelegateShare>> {
    let s = require(view, session_id)?;
    if who.id != s.creator {
        return Err(Error::denied(format!(
            "only the creator of session {session_id} may take its delegate shares"
        )));
    }
    Ok(s.delegate_shares)
}

/// GetSessionStatus and friends: the session, if `who` may see it.
pub fn status(view: &dyn View, who: &Principal, session_id: &str) -> Result<Session> {
    let mut s = require(view, session_id)?;
    if !s.may_view(who) {
        return Err(Error::denied(format!(
            "party {:?} may not view session {session_id}",
            who.id
        )));
    }
    if !s.status.is_closed() {
        s.waiting_for = s.compute_waiting_for();
    }
    Ok(s)
}

/// Sessions `who` may see, newest first, optionally by status: every session for a
/// coordinator; for anyone else, the sessions it created or participates in.
pub fn list(
    view: &dyn View,
    who: &Principal,
    status: Option<SessionStatus>,
    limit: usize,
) -> Result<Vec<Session>> {
    let mut out = Vec::new();
    let mut from = Vec::new();
    loop {
        let page = view.scan(Table::Sessions, &from, &[], 1024)?;
        let Some((last, _)) = page.last() else { break };
        from = last.clone();
        from.push(0);
        for (_, raw) in &page {
            let s: Session = decode(raw)?;
            if status.is_none_or(|st| st == s.status) && s.may_view(who) {
                out.push(s);
            }
        }
        if page.len() < 1024 {
            break;
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    out.truncate(limit);
    Ok(out)
}

/// PublishSessionEvent (coordinator only): stores the event for each selected party.
/// Returns the recipients and wakeups.
pub fn publish(
    tx: &mut dyn Tx,
    who: &Principal,
    event: SessionEvent,
    now: Millis,
    limits: &Limits,
) -> Result<(Vec<String>, Wakeups)> {
    who.must_be_coordinator("publishing a session event")?;
    validate::label("event.event_type", &event.event_type, false)?;
    if event.selected_parties.is_empty() {
        return Err(Error::invalid(
            "event.selected_parties is empty; name the parties to notify",
        ));
    }
    if event.selected_parties.len() > limits.max_recipients {
        return Err(Error::invalid(format!(
            "event.selected_parties has more than {} parties",
            limits.max_recipients
        )));
    }
    for (i, p) in event.selected_parties.iter().enumerate() {
        validate::party_id(&format!("event.selected_parties[{i}]"), p)?;
        identity::require_party(tx, p)?;
    }
    let recipients = event.selected_parties.clone();
    let wakeups = deliver_event(tx, &event, &recipients, now, limits)?;
    Ok((recipients, wakeups))
}

/// What the sweeper did.
#[derive(Debug, Default)]
pub struct SweepOutcome {
    pub expired: Vec<String>,
    pub stalled: Vec<String>,
    pub purged: Vec<String>,
    pub wakeups: Wakeups,
}

/// Where [`sweep`] stopped in `OpenSessions`, in `Meta`.
const OPEN_SESSIONS_SWEEP_CURSOR: &[u8] = b"sweep-cursor/open-sessions";

/// Expires sessions past their deadline, fails stalled ones, purges closed ones past
/// retention. Looks at no more than `limit` open sessions and purges at most `limit` closed
/// ones per call. The open sessions are walked with a cursor that wraps around, so every
/// open session is looked at within `ceil(open / limit)` calls however many healthy ones
/// sort before it.
pub fn sweep(tx: &mut dyn Tx, now: Millis, limits: &Limits, limit: usize) -> Result<SweepOutcome> {
    let mut out = SweepOutcome::default();
    for (key, _) in cursor::next_page(tx, Table::OpenSessions, OPEN_SESSIONS_SWEEP_CURSOR, limit)? {
        let id = String::from_utf8_lossy(&key).into_owned();
        let Some(mut s) = get(tx, &id)? else {
            tx.delete(Table::OpenSessions, &key)?;
            continue;
        };
        if now >= s.expires_at {
            out.wakeups.extend(close(
                tx,
                &mut s,
                SessionStatus::Expired,
                "session expired before it completed".into(),
                now,
                limits,
            )?);
            out.expired.push(id);
        } else if now - s.last_progress_at >= s.stall_timeout(limits) {
            let waiting = s.compute_waiting_for();
            let reason = format!(
                "stalled: no progress for {} s; waiting for {}",
                (now - s.last_progress_at) / 1000,
                if waiting.is_empty() {
                    "nobody".to_string()
                } else {
                    waiting.join(", ")
                }
            );
            out.wakeups.extend(close(
                tx,
                &mut s,
                SessionStatus::Failed,
                reason,
                now,
                limits,
            )?);
            out.stalled.push(id);
        }
    }
    let until = Key::new()
        .u64(u64::try_from(now).unwrap_or(0).saturating_add(1))
        .build();
    for (key, _) in tx.scan(Table::Purge, &[], &until, limit)? {
        tx.delete(Table::Purge, &key)?;
        let id = String::from_utf8_lossy(key.get(10..).unwrap_or_default()).into_owned();
        if let Some(s) = get(tx, &id)? {
            for p in &s.participants {
                mailbox::purge(tx, &MailboxAddr::session(&p.party_id, &s.id))?;
            }
            crate::stream::purge_send_ids(tx, &id)?;
            tx.delete(Table::Sessions, &session_key(&id))?;
            out.purged.push(id);
        }
    }
    Ok(out)
}
