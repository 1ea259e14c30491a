//! Who may read, acknowledge and inspect which messages. The storage mechanics are in
//! [`crate::mailbox`]; this module holds the authorization rules every front shares.

use crate::error::{Error, ErrorKind, Result};
use crate::identity::Principal;
use crate::limits::Millis;
use crate::mailbox::{self, Delivery, DeliveryStatus, Entry, MailboxAddr, Message, MessageId};
use crate::session;
use crate::store::{Tx, View};
use crate::validate;

/// The mailbox `party_id` reads for `session_id`, if `who` is that party and a participant.
pub fn session_mailbox(
    view: &dyn View,
    who: &Principal,
    session_id: &str,
    party_id: &str,
) -> Result<MailboxAddr> {
    validate::party_id("party_id", party_id)?;
    who.must_be("party_id", party_id)?;
    let s = session::require(view, session_id)?;
    s.require_participant(who)?;
    Ok(MailboxAddr::session(party_id, session_id))
}

/// GetPendingMessages: waiting messages created after `after_timestamp`, oldest first, a
/// page of about `limit`. Messages share milliseconds, so a page is never cut inside one
/// (it may run past `limit` to finish the millisecond of its last message, up to 4x): asking
/// again with the last one's `created_at` returns exactly the rest.
pub fn pending_after(
    view: &dyn View,
    addr: &MailboxAddr,
    after_timestamp: Millis,
    limit: usize,
) -> Result<Vec<Delivery>> {
    mailbox::pending_created_after(view, addr, after_timestamp, limit, limit.saturating_mul(4))
}

fn find_entry(message: &Message, party_id: &str) -> Option<(MailboxAddr, u64)> {
    message
        .recipients
        .iter()
        .find(|(a, _)| a.owner == party_id)
        .cloned()
}

/// The message's header (no payload).
fn require_message(view: &dyn View, id_str: &str, session_id: &str) -> Result<Message> {
    let id: MessageId = validate::message_id("message_id", id_str)?;
    let message = mailbox::get_header(view, &id)?
        .ok_or_else(|| Error::not_found(format!("message {id_str} not found")))?;
    if !session_id.is_empty() && message.session_id != session_id {
        return Err(Error::not_found(format!(
            "message {id_str} is not in session {session_id}"
        )));
    }
    Ok(message)
}

/// What settling a copy did: its status now, and where the copy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub status: DeliveryStatus,
    pub mailbox: MailboxAddr,
    pub seq: u64,
}

/// One AcknowledgeMessage, as [`acknowledge_batch`] takes it.
#[derive(Debug, Clone)]
pub struct Ack {
    pub who: Principal,
    pub message_id: String,
    pub party_id: String,
    pub session_id: String,
    pub ok: bool,
    pub error_message: String,
}

/// AcknowledgeMessage: the recipient settles its copy, acknowledged or (`ok == false`) failed.
/// Reads the message's header only, never its payload.
#[allow(clippy::too_many_arguments)]
pub fn acknowledge(
    tx: &mut dyn Tx,
    who: &Principal,
    message_id: &str,
    party_id: &str,
    session_id: &str,
    ok: bool,
    error_message: &str,
    now: Millis,
) -> Result<Settled> {
    let ack = Ack {
        who: who.clone(),
        message_id: message_id.to_string(),
        party_id: party_id.to_string(),
        session_id: session_id.to_string(),
        ok,
        error_message: error_message.to_string(),
    };
    acknowledge_batch(tx, std::slice::from_ref(&ack), now)?
        .pop()
        .unwrap_or_else(|| Err(Error::internal("an ack batch of one answered nothing")))
}

/// Many acknowledgments in one transaction, each answered on its own: a refused one changes
/// nothing (every check comes before the first write), and each mailbox's pending count is
/// rewritten once for the whole batch. A store failure (not a refusal) fails the whole
/// batch with the outer `Err`, so the caller's transaction rolls back.
pub fn acknowledge_batch(
    tx: &mut dyn Tx,
    acks: &[Ack],
    now: Millis,
) -> Result<Vec<Result<Settled>>> {
    let mut released: Vec<(MailboxAddr, u64)> = Vec::new();
    let mut out = Vec::with_capacity(acks.len());
    for a in acks {
        let one = acknowledge_one(tx, a, now).map(|(settled, newly)| {
            if newly {
                match released.iter_mut().find(|(m, _)| *m == settled.mailbox) {
                    Some((_, n)) => *n += 1,
                    None => released.push((settled.mailbox.clone(), 1)),
                }
            }
            settled
        });
        if let Err(e) = &one {
            if matches!(e.kind, ErrorKind::Internal | ErrorKind::Unavailable) {
                return Err(e.clone());
            }
        }
        out.push(one);
    }
    for (addr, n) in &released {
        mailbox::release(tx, addr, *n)?;
    }
    Ok(out)
}

fn acknowledge_one(tx: &mut dyn Tx, a: &Ack, now: Millis) -> Result<(Settled, bool)> {
    validate::party_id("party_id", &a.party_id)?;
    a.who.must_be("party_id", &a.party_id)?;
    validate::text("error_message", &a.error_message, 1024)?;
    let message = require_message(tx, &a.message_id, &a.session_id)?;
    let (addr, seq) = find_entry(&message, &a.party_id).ok_or_else(|| {
        Error::denied(format!(
            "message {} was not sent to {:?}",
            a.message_id, a.party_id
        ))
    })?;
    let (status, newly) = mailbox::settle_entry(tx, &addr, seq, a.ok, &a.error_message, now)?;
    if addr == MailboxAddr::events(&a.party_id) {
        // A session event has no audience but its recipient: once settled, it is gone.
        mailbox::remove_message(tx, &message.id)?;
    }
    Ok((
        Settled {
            status,
            mailbox: addr,
            seq,
        },
        newly,
    ))
}

/// One recipient's delivery record, as GetMessageStatus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    pub party_id: String,
    pub mailbox: MailboxAddr,
    pub seq: u64,
    pub entry: Entry,
}

/// GetMessageStatus: for the sender, the session's creator, or a coordinator.
pub fn status(
    view: &dyn View,
    who: &Principal,
    message_id: &str,
    session_id: &str,
) -> Result<(Message, Vec<RecipientStatus>)> {
    let message = require_message(view, message_id, session_id)?;
    let allowed = who.coordinator
        || who.id == message.sender
        || (!message.session_id.is_empty()
            && session::get(view, &message.session_id)?.is_some_and(|s| s.creator == who.id));
    if !allowed {
        return Err(Error::denied(format!(
            "only the sender may see the delivery status of message {message_id}"
        )));
    }
    let mut out = Vec::with_capacity(message.recipients.len());
    for (addr, seq) in &message.recipients {
        if let Some(entry) = mailbox::entry(view, addr, *seq)? {
            out.push(RecipientStatus {
                party_id: addr.owner.clone(),
                mailbox: addr.clone(),
                seq: *seq,
                entry,
            });
        }
    }
    Ok((message, out))
}
