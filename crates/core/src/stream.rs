//! The rules of the streaming mailbox API (`cohort.v1.Mailbox`): a batch of sends made
//! idempotent by client-chosen ids, and acknowledgements of a batch, each run inside one
//! store transaction by the caller.
//!
//! **Idempotent sends.** Every send names a `client_id`, unique per sender within a session.
//! The first send with it stores the message and records `(session, sender, client_id) ->
//! message id` in [`Table::SendIds`]; a later send with the same id stores nothing and is
//! answered with the recorded message id, so a sender that lost an answer (a dropped
//! connection, a relay restart) sends again without making a copy. The relay does not compare
//! the retried item with the first: a client id names one message. Records live as long as
//! the session's messages: the sweeper purges them with the session, after retention.
//!
//! **Per item, all or nothing.** Each item runs in its own [`Savepoint`], so an item refused
//! half way (a full mailbox after other recipients got their copy) leaves nothing behind and
//! the rest of the batch still commits. A store failure fails the whole batch.

use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode, prefix_end, Key};
use crate::delivery;
use crate::error::{Error, ErrorKind, Result};
use crate::identity::Principal;
use crate::limits::{Limits, Millis};
use crate::mailbox::{self, Message, MessageId};
use crate::savepoint::Savepoint;
use crate::session::{self, RouteRequest};
use crate::store::{Table, Tx};

/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// One send of a batch: the route request (its `from_party` is the sender) and its client id.
#[derive(Debug, Clone)]
pub struct SendItem {
    pub client_id: String,
    pub route: RouteRequest,
}

/// What became of one send of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Stored by this batch: the caller wakes its recipients after the commit.
    Stored(Message),
    /// An earlier send with the same client id stored this message; nothing was stored now.
    Duplicate(MessageId),
    /// Refused; nothing was stored for it.
    Refused(Error),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SendRecord {
    message_id: MessageId,
}

/// A client id: 1..=128 printable ASCII characters.
pub fn validate_client_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(format!(
            "{field} is empty; name every send so that a retry is recognised"
        )));
    }
    if id.len() > MAX_CLIENT_ID_LEN {
        return Err(Error::invalid(format!(
            "{field} is {} bytes; at most {MAX_CLIENT_ID_LEN}",
            id.len()
        )));
    }
    if id.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(Error::invalid(format!(
            "{field} must be printable ASCII without spaces"
        )));
    }
    Ok(())
}

fn send_id_key(session_id: &str, sender: &str, client_id: &str) -> Result<Vec<u8>> {
    Ok(Key::new()
        .part(session_id.as_bytes())?
        .part(sender.as_bytes())?
        .part(client_id.as_bytes())?
        .build())
}

/// Whether an error is the store failing rather than a rule refusing: it fails the batch.
fn is_store_failure(e: &Error) -> bool {
    matches!(e.kind, ErrorKind::Internal | ErrorKind::Unavailable)
}

/// Sends a batch as `who`: item `i` gets message id `ids[i]` if it is stored now. Returns one
/// outcome per item, in order. `Err` only when the store fails (nothing is kept then).
pub fn send_batch(
    tx: &mut dyn Tx,
    who: &Principal,
    items: &[SendItem],
    ids: &[MessageId],
    now: Millis,
    limits: &Limits,
) -> Result<Vec<Sent>> {
    if ids.len() != items.len() {
        return Err(Error::internal(format!(
            "{} message ids for {} sends",
            ids.len(),
            items.len()
        )));
    }
    // The items of a batch mostly share a session and recipients: their session and mailbox
    // meta are read once and written once.
    let mut batch = Savepoint::caching(tx, BATCH_READS);
    let mut out = Vec::with_capacity(items.len());
    for (item, id) in items.iter().zip(ids) {
        match send_one(&mut batch, who, item, *id, now, limits) {
            Ok(sent) => out.push(sent),
            Err(e) if is_store_failure(&e) => return Err(e),
            Err(e) => out.push(Sent::Refused(e)),
        }
    }
    batch.commit()?;
    Ok(out)
}

/// What the items of a batch read again and again; small values only.
const BATCH_READS: &[Table] = &[Table::Sessions, Table::MailboxMeta];

fn send_one(
    tx: &mut dyn Tx,
    who: &Principal,
    item: &SendItem,
    id: MessageId,
    now: Millis,
    limits: &Limits,
) -> Result<Sent> {
    validate_client_id("client_id", &item.client_id)?;
    let valid = session::validate_route(item.route.clone(), limits)?;
    who.must_be("from_party", &item.route.from_party)?;
    let key = send_id_key(&item.route.session_id, &who.id, &item.client_id)?;
    if let Some(raw) = tx.get(Table::SendIds, &key)? {
        let record: SendRecord = decode(&raw)?;
        return Ok(Sent::Duplicate(record.message_id));
    }
    let mut sp = Savepoint::new(tx);
    let (message, _recipients) = session::route_valid(&mut sp, who, &valid, id, now, limits)?;
    sp.put(
        Table::SendIds,
        &key,
        &encode(&SendRecord { message_id: id })?,
    )?;
    sp.commit()?;
    Ok(Sent::Stored(message))
}

/// The message id a send with `client_id` stored in `session_id` for `sender`, if any.
pub fn sent_with(
    view: &dyn crate::store::View,
    session_id: &str,
    sender: &str,
    client_id: &str,
) -> Result<Option<MessageId>> {
    let key = send_id_key(session_id, sender, client_id)?;
    view.get(Table::SendIds, &key)?
        .map(|raw| decode::<SendRecord>(&raw).map(|r| r.message_id))
        .transpose()
}

/// Ack: acknowledges every waiting message of `party_id`'s mailbox in `session_id` with seq
/// <= `up_to_seq`, and nothing above. Returns how many it settled.
pub fn ack_up_to(
    tx: &mut dyn Tx,
    who: &Principal,
    session_id: &str,
    party_id: &str,
    up_to_seq: u64,
    now: Millis,
) -> Result<usize> {
    let addr = delivery::session_mailbox(tx, who, session_id, party_id)?;
    mailbox::ack_up_to(tx, &addr, up_to_seq, now)
}

/// AckIds: acknowledges each message (or session event) of `who` by id. Returns one outcome
/// per id, in order; `Err` only when the store fails.
pub fn ack_ids(
    tx: &mut dyn Tx,
    who: &Principal,
    message_ids: &[String],
    now: Millis,
) -> Result<Vec<Result<()>>> {
    let mut out = Vec::with_capacity(message_ids.len());
    for id in message_ids {
        let mut sp = Savepoint::new(tx);
        match delivery::acknowledge(&mut sp, who, id, &who.id, "", true, "", now) {
            Ok(_) => {
                sp.commit()?;
                out.push(Ok(()));
            }
            Err(e) if is_store_failure(&e) => return Err(e),
            Err(e) => out.push(Err(e)),
        }
    }
    Ok(out)
}

/// One acknowledgement of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckRequest {
    /// Everything waiting in the caller's mailbox of a session up to a seq.
    UpTo { session_id: String, up_to_seq: u64 },
    /// These messages (or session events) of the caller.
    Ids(Vec<String>),
}

/// What one acknowledgement did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acked {
    /// `UpTo`: the waiting messages it settled. `Ids`: the ids now acknowledged.
    pub settled: u64,
    /// `Ids`: the ids refused, with why.
    pub failures: Vec<(String, Error)>,
}

/// Runs a batch of acknowledgements as `who`, in order. An `UpTo` refused as a whole (not
/// the caller's mailbox) is an `Err` in its place; `Err` overall only when the store fails.
pub fn ack_batch(
    tx: &mut dyn Tx,
    who: &Principal,
    requests: &[AckRequest],
    now: Millis,
) -> Result<Vec<Result<Acked>>> {
    let mut batch = Savepoint::caching(tx, BATCH_READS);
    let tx: &mut dyn Tx = &mut batch;
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        match r {
            AckRequest::UpTo {
                session_id,
                up_to_seq,
            } => {
                // The check writes nothing, so a refusal leaves nothing behind.
                let addr = match delivery::session_mailbox(tx, who, session_id, &who.id) {
                    Ok(addr) => addr,
                    Err(e) if is_store_failure(&e) => return Err(e),
                    Err(e) => {
                        out.push(Err(e));
                        continue;
                    }
                };
                let settled = mailbox::ack_up_to(tx, &addr, *up_to_seq, now)?;
                out.push(Ok(Acked {
                    settled: settled as u64,
                    failures: Vec::new(),
                }));
            }
            AckRequest::Ids(ids) => {
                let mut acked = Acked::default();
                for (id, r) in ids.iter().zip(ack_ids(tx, who, ids, now)?) {
                    match r {
                        Ok(()) => acked.settled += 1,
                        Err(e) => acked.failures.push((id.clone(), e)),
                    }
                }
                out.push(Ok(acked));
            }
        }
    }
    batch.commit()?;
    Ok(out)
}

/// Forgets the client ids of a session's sends (its messages are being purged).
pub fn purge_send_ids(tx: &mut dyn Tx, session_id: &str) -> Result<()> {
    let prefix = Key::new().part(session_id.as_bytes())?.build();
    let to = prefix_end(&prefix);
    for (key, _) in tx.scan(Table::SendIds, &prefix, &to, usize::MAX)? {
        tx.delete(Table::SendIds, &key)?;
    }
    Ok(())
}
