//! Identity, login and the directory of parties.
//!
//! A party logs in by signing a fresh, single-use, short-lived challenge with its Ed25519
//! identity key. The party id must be enrolled to that key, or be one the login may bind (see
//! [`crate::enrollment`]); another key claiming the id is refused. Access tokens are 256 random
//! bits handed to the caller once and stored only as their SHA-256 hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::challenges;
use crate::codec::{decode, encode, Key};
use crate::cursor;
use crate::error::{Error, Result};
use crate::limits::{Limits, Millis};
use crate::store::{Table, Tx, View};
use crate::validate;

/// Who is calling, as every rule sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The party id (MPC router) or a namespaced id from another front (`qpq:<hex>`).
    pub id: String,
    /// Granted by config: the identity key is listed as a coordinator key.
    pub coordinator: bool,
    /// The Ed25519 key the caller logged in with (sessions admit only the key they name).
    pub identity_key: [u8; 32],
}

impl Principal {
    /// Refuses unless the caller is `party_id` itself.
    pub fn must_be(&self, field: &str, party_id: &str) -> Result<()> {
        if self.id == party_id {
            Ok(())
        } else {
            Err(Error::denied(format!(
                "{field} {party_id:?} is not the authenticated party ({:?})",
                self.id
            )))
        }
    }

    pub fn must_be_coordinator(&self, what: &str) -> Result<()> {
        if self.coordinator {
            Ok(())
        } else {
            Err(Error::denied(format!(
                "{what} needs the coordinator role; party {:?} does not have it (coordinator keys are listed in the server config)",
                self.id
            )))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NotificationChannel {
    pub email: String,
    pub phone: String,
    pub push_token: String,
}

impl NotificationChannel {
    pub fn is_empty(&self) -> bool {
        self.email.is_empty() && self.phone.is_empty() && self.push_token.is_empty()
    }
}

/// An X25519 key a party published, signed by its identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedKey {
    pub encryption_key: Vec<u8>,
    pub signature: Vec<u8>,
    pub published_at: Millis,
}

/// A party in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub id: String,
    /// The Ed25519 key this id is bound to (by enrollment, or at the login that bound it);
    /// empty once unenrolled.
    pub identity_key: Vec<u8>,
    /// persistent, delegate, temporary; empty until the party registers.
    pub role: String,
    pub version: String,
    pub notification: Option<NotificationChannel>,
    pub registered_at: Millis,
    pub last_seen_at: Millis,
    pub encryption_key: Option<PublishedKey>,
}

impl Party {
    pub fn online(&self, now: Millis, limits: &Limits) -> bool {
        now - self.last_seen_at <= limits.online_window_ms
    }
    /// Offline mode: reachable by a notification channel, not by a live stream.
    pub fn offline_mode(&self) -> bool {
        self.notification.as_ref().is_some_and(|n| !n.is_empty())
    }
}

pub const ROLES: [&str; 3] = ["persistent", "delegate", "temporary"];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Challenge {
    party_id: String,
    public_key: Vec<u8>,
    challenge: Vec<u8>,
    expires_at: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    hash: [u8; 32],
    principal: Principal,
    expires_at: Millis,
}

/// What a challenge request gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedChallenge {
    pub challenge_id: String,
    pub challenge: Vec<u8>,
    pub expires_at: Millis,
}

/// What a successful login gets back. The token is shown once and never stored in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_at: Millis,
    pub principal: Principal,
}

fn party_key(id: &str) -> Result<Vec<u8>> {
    Ok(Key::new().part(id.as_bytes())?.build())
}

pub fn get_party(view: &dyn View, id: &str) -> Result<Option<Party>> {
    view.get(Table::Parties, &party_key(id)?)?
        .map(|b| decode(&b))
        .transpose()
}

pub fn require_party(view: &dyn View, id: &str) -> Result<Party> {
    get_party(view, id)?.ok_or_else(|| Error::not_found(format!("party {id:?} is not registered")))
}

pub fn put_party(tx: &mut dyn Tx, party: &Party) -> Result<()> {
    tx.put(Table::Parties, &party_key(&party.id)?, &encode(party)?)
}

/// Issues a login challenge for `party_id` claiming `public_key`. `random` is 64 fresh random
/// bytes from the caller (the core does no I/O): 24 for the id (after the issue time), 32 for
/// the challenge. At most `max_challenges` are kept; past it the oldest is evicted.
pub fn issue_challenge(
    tx: &mut dyn Tx,
    party_id: &str,
    public_key: &[u8],
    random: [u8; 64],
    now: Millis,
    limits: &Limits,
) -> Result<IssuedChallenge> {
    validate::party_id("party_id", party_id)?;
    if public_key.len() != 32 {
        return Err(Error::invalid(format!(
            "public_key is {} bytes; an Ed25519 key is 32",
            public_key.len()
        )));
    }
    if let Some(p) = get_party(tx, party_id)? {
        if !p.identity_key.is_empty() && p.identity_key != public_key {
            return Err(Error::denied(format!(
                "party id {party_id:?} is bound to another identity key"
            )));
        }
    }
    let challenge_id = challenges::new_id(now, &random[..24]);
    let challenge = random[32..].to_vec();
    let expires_at = now + limits.challenge_ttl_ms;
    let record = Challenge {
        party_id: party_id.into(),
        public_key: public_key.into(),
        challenge: challenge.clone(),
        expires_at,
    };
    challenges::insert(tx, &challenge_id, &encode(&record)?, now, limits)?;
    Ok(IssuedChallenge {
        challenge_id,
        challenge,
        expires_at,
    })
}

/// Answers a challenge: verifies the signature, checks the key may log in as the party id
/// ([`crate::enrollment::admit`]), and issues an access token. The challenge is consumed whatever the outcome.
#[allow(clippy::too_many_arguments)]
pub fn login(
    tx: &mut dyn Tx,
    challenge_id: &str,
    party_id: &str,
    public_key: &[u8],
    signature: &[u8],
    token: [u8; 32],
    coordinator_keys: &[[u8; 32]],
    now: Millis,
    limits: &Limits,
) -> Result<IssuedToken> {
    validate::party_id("party_id", party_id)?;
    if challenge_id.len() != 64 {
        return Err(Error::invalid("challenge_id is not one this server issued"));
    }
    let Some(raw) = tx.get(Table::Challenges, challenge_id.as_bytes())? else {
        return Err(Error::unauthenticated(
            "unknown or already used challenge; request a new one",
        ));
    };
    challenges::remove(tx, challenge_id.as_bytes())?;
    let ch: Challenge = decode(&raw)?;
    if now > ch.expires_at {
        return Err(Error::unauthenticated(
            "challenge expired; request a new one",
        ));
    }
    if ch.party_id != party_id || ch.public_key != public_key {
        return Err(Error::unauthenticated(
            "party_id or public_key differ from the ones the challenge was issued for",
        ));
    }
    let message = cohort_crypto::identity::login_message(&ch.challenge, party_id);
    cohort_crypto::identity::verify(
        public_key,
        cohort_crypto::identity::LOGIN_DOMAIN,
        &message,
        signature,
    )
    .map_err(|e| Error::unauthenticated(format!("login signature rejected: {e}")))?;

    let identity_key: [u8; 32] = public_key
        .try_into()
        .map_err(|_| Error::invalid("public_key is not an Ed25519 key (32 bytes)"))?;
    let coordinator = coordinator_keys.contains(&identity_key);
    crate::enrollment::admit(tx, party_id, &identity_key, coordinator, now, limits)?;
    let mut party = match get_party(tx, party_id)? {
        Some(p) => p,
        None => Party {
            id: party_id.into(),
            identity_key: Vec::new(),
            role: String::new(),
            version: String::new(),
            notification: None,
            registered_at: now,
            last_seen_at: now,
            encryption_key: None,
        },
    };
    party.identity_key = public_key.to_vec();
    party.last_seen_at = now;
    put_party(tx, &party)?;

    let principal = Principal {
        id: party_id.into(),
        coordinator,
        identity_key,
    };
    let hash: [u8; 32] = Sha256::digest(token).into();
    let expires_at = now + limits.token_ttl_ms;
    let record = TokenRecord {
        hash,
        principal: principal.clone(),
        expires_at,
    };
    tx.put(Table::Tokens, &hash, &encode(&record)?)?;
    Ok(IssuedToken {
        access_token: hex::encode(token),
        expires_at,
        principal,
    })
}

/// Resolves a bearer token to its principal.
pub fn authenticate(view: &dyn View, access_token: &str, now: Millis) -> Result<Principal> {
    let (principal, _) = authenticate_with_expiry(view, access_token, now)?;
    Ok(principal)
}

/// As [`authenticate`], also returning when the token expires (for callers that cache).
pub fn authenticate_with_expiry(
    view: &dyn View,
    access_token: &str,
    now: Millis,
) -> Result<(Principal, Millis)> {
    let hash = token_hash(access_token)?;
    let Some(raw) = view.get(Table::Tokens, &hash)? else {
        return Err(Error::unauthenticated("unknown access token; log in again"));
    };
    let record: TokenRecord = decode(&raw)?;
    if !bool::from(record.hash.ct_eq(&hash)) {
        return Err(Error::unauthenticated("unknown access token; log in again"));
    }
    if now > record.expires_at {
        return Err(Error::unauthenticated("access token expired; log in again"));
    }
    Ok((record.principal, record.expires_at))
}

/// The stored form of a token: its SHA-256. Malformed tokens are refused before any lookup.
pub fn token_hash(access_token: &str) -> Result<[u8; 32]> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(access_token, &mut raw)
        .map_err(|_| Error::unauthenticated("malformed access token (expected 64 hex chars)"))?;
    Ok(Sha256::digest(raw).into())
}

/// RegisterParty: sets the caller's role, version and notification channel.
pub fn register(
    tx: &mut dyn Tx,
    who: &Principal,
    party_id: &str,
    role: &str,
    version: &str,
    notification: Option<NotificationChannel>,
    now: Millis,
) -> Result<Party> {
    validate::party_id("party_id", party_id)?;
    who.must_be("party_id", party_id)?;
    if !ROLES.contains(&role) {
        return Err(Error::invalid(format!(
            "party_role {role:?} is not one of persistent, delegate, temporary"
        )));
    }
    validate::text("version", version, 64)?;
    crate::enrollment::check_role(tx, party_id, role)?;
    if let Some(n) = &notification {
        validate::text("notification.email", &n.email, 256)?;
        validate::text("notification.phone", &n.phone, 64)?;
        validate::text("notification.push_token", &n.push_token, 4096)?;
    }
    let mut party = require_party(tx, party_id)?;
    if party.role.is_empty() {
        party.registered_at = now;
    }
    party.role = role.into();
    party.version = version.into();
    party.notification = notification.filter(|n| !n.is_empty());
    party.last_seen_at = now;
    put_party(tx, &party)?;
    Ok(party)
}

/// Heartbeat: marks the caller as seen now.
pub fn heartbeat(tx: &mut dyn Tx, who: &Principal, party_id: &str, now: Millis) -> Result<()> {
    validate::party_id("party_id", party_id)?;
    who.must_be("party_id", party_id)?;
    let mut party = require_party(tx, party_id)?;
    party.last_seen_at = now;
    put_party(tx, &party)
}

/// Registered parties (those that called RegisterParty), optionally filtered.
pub fn list_parties(
    view: &dyn View,
    role_filter: &str,
    only_online: bool,
    now: Millis,
    limits: &Limits,
) -> Result<Vec<Party>> {
    if !role_filter.is_empty() && !ROLES.contains(&role_filter) {
        return Err(Error::invalid(format!(
            "role_filter {role_filter:?} is not one of persistent, delegate, temporary"
        )));
    }
    let mut out = Vec::new();
    let mut from = Vec::new();
    loop {
        let page = view.scan(Table::Parties, &from, &[], 1024)?;
        let Some((last, _)) = page.last() else { break };
        from = last.clone();
        from.push(0);
        for (_, raw) in &page {
            let p: Party = decode(raw)?;
            if p.role.is_empty() || (!role_filter.is_empty() && p.role != role_filter) {
                continue;
            }
            if only_online && !p.online(now, limits) {
                continue;
            }
            out.push(p);
        }
        if page.len() < 1024 {
            break;
        }
    }
    Ok(out)
}

/// Publishes the caller's X25519 encryption key; the signature by its identity key is checked
/// here so the directory never serves a key its owner did not sign.
pub fn publish_encryption_key(
    tx: &mut dyn Tx,
    who: &Principal,
    encryption_key: &[u8],
    signature: &[u8],
    now: Millis,
) -> Result<Millis> {
    if encryption_key.len() != 32 {
        return Err(Error::invalid(format!(
            "encryption_key is {} bytes; an X25519 key is 32",
            encryption_key.len()
        )));
    }
    let mut party = require_party(tx, &who.id)?;
    let message = cohort_crypto::identity::encryption_key_message(&who.id, encryption_key);
    cohort_crypto::identity::verify(
        &party.identity_key,
        cohort_crypto::identity::ENCRYPTION_KEY_DOMAIN,
        &message,
        signature,
    )
    .map_err(|e| Error::invalid(format!("signature over encryption_key rejected: {e}")))?;
    party.encryption_key = Some(PublishedKey {
        encryption_key: encryption_key.to_vec(),
        signature: signature.to_vec(),
        published_at: now,
    });
    put_party(tx, &party)?;
    Ok(now)
}

/// Deletes every access token issued to `party_id` (its key was unenrolled or replaced).
/// Walks the whole token table: an administrative act, not a hot path.
pub(crate) fn revoke_tokens(tx: &mut dyn Tx, party_id: &str) -> Result<usize> {
    let mut doomed = Vec::new();
    let mut from = Vec::new();
    loop {
        let page = tx.scan(Table::Tokens, &from, &[], 1024)?;
        let Some((last, _)) = page.last() else { break };
        from = last.clone();
        from.push(0);
        for (k, raw) in &page {
            let t: TokenRecord = decode(raw)?;
            if t.principal.id == party_id {
                doomed.push(k.clone());
            }
        }
        if page.len() < 1024 {
            break;
        }
    }
    for k in &doomed {
        tx.delete(Table::Tokens, k)?;
    }
    Ok(doomed.len())
}

/// Removes expired challenges and tokens, looking at no more than `limit` of each per call.
/// A cursor per table carries on where the last call stopped, so successive calls reach
/// expired entries however many live ones sort before them.
pub fn sweep_credentials(tx: &mut dyn Tx, now: Millis, limit: usize) -> Result<usize> {
    let mut removed = 0;
    for (k, v) in cursor::next_page(tx, Table::Challenges, CHALLENGE_SWEEP_CURSOR, limit)? {
        let c: Challenge = decode(&v)?;
        if now > c.expires_at {
            challenges::remove(tx, &k)?;
            removed += 1;
        }
    }
    for (k, v) in cursor::next_page(tx, Table::Tokens, TOKEN_SWEEP_CURSOR, limit)? {
        let t: TokenRecord = decode(&v)?;
        if now > t.expires_at {
            tx.delete(Table::Tokens, &k)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Where [`sweep_credentials`] stopped, in `Meta`.
const CHALLENGE_SWEEP_CURSOR: &[u8] = b"sweep-cursor/challenges";
const TOKEN_SWEEP_CURSOR: &[u8] = b"sweep-cursor/tokens";
