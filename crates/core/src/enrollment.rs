//! Enrollment: which identity key a party id belongs to, decided before anyone logs in.
//!
//! A coordinator (or an admin holding a coordinator key) enrolls `party id -> Ed25519 key`.
//! At login the id must be enrolled to the key that signs, with three exceptions that bind
//! the id on that login instead, each recorded as an enrollment with its [`Source`]:
//!
//! - the key-derived id (`key-` and 16 hex digits of SHA-256 of the key,
//!   [`cohort_crypto::identity::key_party_id`]), which no other key can own;
//! - any id not yet bound, for a key the config lists as a coordinator key;
//! - any id not yet bound, when the relay runs with `open_enrollment` (development only: the
//!   first key to log in takes the id, as before enrollment existed).
//!
//! So nobody can log in as `treasury-signer-1` before its owner does and take the id. The
//! [`crate::identity::Party`] record mirrors the enrolled key (`identity_key`), which is what
//! the directory serves and what a session names when its creator gives no key.

use cohort_crypto::identity::{key_party_id, KEY_PARTY_ID_PREFIX};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode, Key};
use crate::error::{Error, Result};
use crate::identity::{self, Party, Principal, ROLES};
use crate::limits::{Limits, Millis};
use crate::store::{Table, Tx, View};
use crate::validate;

/// How a party id came to be bound to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A coordinator enrolled it (Enroll, `cohort enroll`).
    Enrolled,
    /// The key logged in under its own key-derived id.
    KeyId,
    /// A configured coordinator key logged in under an id nobody held.
    CoordinatorKey,
    /// The first key to log in took the id, under `open_enrollment`.
    FirstLogin,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Enrolled => "enrolled",
            Source::KeyId => "key_id",
            Source::CoordinatorKey => "coordinator_key",
            Source::FirstLogin => "first_login",
        }
    }
}

/// A party id's binding to its identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub party_id: String,
    pub identity_key: [u8; 32],
    /// The role the party may register with; empty: any.
    pub role: String,
    pub source: Source,
    /// The coordinator that enrolled it; empty for bindings made at login.
    pub enrolled_by: String,
    pub enrolled_at: Millis,
}

fn key(party_id: &str) -> Result<Vec<u8>> {
    Ok(Key::new().part(party_id.as_bytes())?.build())
}

pub fn get(view: &dyn View, party_id: &str) -> Result<Option<Enrollment>> {
    view.get(Table::Enrollments, &key(party_id)?)?
        .map(|b| decode(&b))
        .transpose()
}

fn put(tx: &mut dyn Tx, e: &Enrollment) -> Result<()> {
    tx.put(Table::Enrollments, &key(&e.party_id)?, &encode(e)?)
}

fn identity_key(field: &str, key: &[u8]) -> Result<[u8; 32]> {
    key.try_into().map_err(|_| {
        Error::invalid(format!(
            "{field} is {} bytes; an Ed25519 key is 32",
            key.len()
        ))
    })
}

/// The identity key `party_id` is bound to: its enrollment, else the key its party record
/// holds. `None` when the id is bound to nothing.
pub fn identity_key_of(view: &dyn View, party_id: &str) -> Result<Option<[u8; 32]>> {
    if let Some(e) = get(view, party_id)? {
        return Ok(Some(e.identity_key));
    }
    Ok(identity::get_party(view, party_id)?.and_then(|p| p.identity_key.try_into().ok()))
}

/// The login rule: may `public_key` log in as `party_id`? Binds the id (records an
/// enrollment) when one of the exceptions in the module docs applies; refuses otherwise.
pub fn admit(
    tx: &mut dyn Tx,
    party_id: &str,
    public_key: &[u8; 32],
    coordinator: bool,
    now: Millis,
    limits: &Limits,
) -> Result<()> {
    if let Some(e) = get(tx, party_id)? {
        if e.identity_key == *public_key {
            return Ok(());
        }
        return Err(Error::denied(format!(
            "party id {party_id:?} is enrolled to another identity key"
        )));
    }
    // A binding made before enrollment existed still keeps other keys out.
    if let Some(p) = identity::get_party(tx, party_id)? {
        if !p.identity_key.is_empty() && p.identity_key != public_key {
            return Err(Error::denied(format!(
                "party id {party_id:?} is bound to another identity key"
            )));
        }
    }
    let own_id = key_party_id(public_key);
    let source = if party_id == own_id {
        Source::KeyId
    } else if coordinator {
        Source::CoordinatorKey
    } else if limits.open_enrollment {
        Source::FirstLogin
    } else {
        return Err(Error::denied(format!(
            "party id {party_id:?} is not enrolled for this identity key; a coordinator \
             enrolls it with `cohort enroll --party-id {party_id} --key {}`, or log in \
             under this key's own id {own_id:?}",
            hex::encode(public_key)
        )));
    };
    put(
        tx,
        &Enrollment {
            party_id: party_id.into(),
            identity_key: *public_key,
            role: String::new(),
            source,
            enrolled_by: String::new(),
            enrolled_at: now,
        },
    )
}

/// Enroll (coordinator only): binds `party_id` to `identity_key`, optionally fixing the role
/// it may register with. Enrolling the same key again updates the role; another key is
/// refused until the id is unenrolled. A party record bound to another key (before
/// enrollment existed) is rebound, and that key's access tokens are revoked.
pub fn enroll(
    tx: &mut dyn Tx,
    who: &Principal,
    party_id: &str,
    key: &[u8],
    role: &str,
    now: Millis,
) -> Result<Enrollment> {
    who.must_be_coordinator("enrolling a party")?;
    validate::party_id("party_id", party_id)?;
    let key = identity_key("identity_key", key)?;
    if !role.is_empty() && !ROLES.contains(&role) {
        return Err(Error::invalid(format!(
            "role {role:?} is not one of persistent, delegate, temporary (or empty: any)"
        )));
    }
    if party_id.starts_with(KEY_PARTY_ID_PREFIX) && party_id != key_party_id(&key) {
        return Err(Error::invalid(format!(
            "party_id {party_id:?} starts with {KEY_PARTY_ID_PREFIX:?}, which only key-derived \
             ids do; this key's id is {:?}",
            key_party_id(&key)
        )));
    }
    if let Some(e) = get(tx, party_id)? {
        if e.identity_key != key {
            return Err(Error::exists(format!(
                "party id {party_id:?} is enrolled to another identity key ({}); unenroll it first",
                hex::encode(e.identity_key)
            )));
        }
    }
    let enrollment = Enrollment {
        party_id: party_id.into(),
        identity_key: key,
        role: role.into(),
        source: Source::Enrolled,
        enrolled_by: who.id.clone(),
        enrolled_at: now,
    };
    put(tx, &enrollment)?;
    match identity::get_party(tx, party_id)? {
        Some(p) if p.identity_key == key => {}
        Some(mut p) => {
            rebind(tx, &mut p, key.to_vec())?;
        }
        None => identity::put_party(
            tx,
            &Party {
                id: party_id.into(),
                identity_key: key.to_vec(),
                role: String::new(),
                version: String::new(),
                notification: None,
                registered_at: now,
                last_seen_at: 0,
                encryption_key: None,
            },
        )?,
    }
    Ok(enrollment)
}

/// Points a party record at another key (or none): the encryption key its old identity
/// signed goes, and so do the access tokens issued to it.
fn rebind(tx: &mut dyn Tx, party: &mut Party, key: Vec<u8>) -> Result<()> {
    party.identity_key = key;
    party.encryption_key = None;
    identity::put_party(tx, party)?;
    identity::revoke_tokens(tx, &party.id)?;
    Ok(())
}

/// Unenroll (coordinator only): the id is bound to no key any more, its published
/// encryption key is dropped and its access tokens are revoked. Returns whether it was
/// enrolled or bound.
pub fn unenroll(tx: &mut dyn Tx, who: &Principal, party_id: &str) -> Result<bool> {
    who.must_be_coordinator("unenrolling a party")?;
    validate::party_id("party_id", party_id)?;
    let was_enrolled = get(tx, party_id)?.is_some();
    tx.delete(Table::Enrollments, &key(party_id)?)?;
    let was_bound = match identity::get_party(tx, party_id)? {
        Some(mut p) if !p.identity_key.is_empty() => {
            rebind(tx, &mut p, Vec::new())?;
            true
        }
        _ => false,
    };
    Ok(was_enrolled || was_bound)
}

/// ListEnrolled (coordinator only): the enrollments of `party_ids`, or every one when empty.
/// Ids enrolled to nothing are left out.
pub fn list(view: &dyn View, who: &Principal, party_ids: &[String]) -> Result<Vec<Enrollment>> {
    who.must_be_coordinator("listing enrollments")?;
    if !party_ids.is_empty() {
        let mut out = Vec::with_capacity(party_ids.len());
        for (i, p) in party_ids.iter().enumerate() {
            validate::party_id(&format!("party_ids[{i}]"), p)?;
            if let Some(e) = get(view, p)? {
                out.push(e);
            }
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    let mut from = Vec::new();
    loop {
        let page = view.scan(Table::Enrollments, &from, &[], 1024)?;
        let Some((last, _)) = page.last() else { break };
        from = last.clone();
        from.push(0);
        for (_, raw) in &page {
            out.push(decode(raw)?);
        }
        if page.len() < 1024 {
            break;
        }
    }
    Ok(out)
}

/// RegisterParty's check: a party enrolled with a role registers with that role only.
pub fn check_role(view: &dyn View, party_id: &str, role: &str) -> Result<()> {
    match get(view, party_id)? {
        Some(e) if !e.role.is_empty() && e.role != role => Err(Error::denied(format!(
            "party {party_id:?} is enrolled with role {:?}; it cannot register as {role:?}",
            e.role
        ))),
        _ => Ok(()),
    }
}
