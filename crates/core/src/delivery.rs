//! Who may read, acknowledge and inspect which messages. The storage mechanics are in
//! [`crate::mailbox`]; this module holds the authorization rules every front shares.

use crate::error::{Error, Result};
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

/// GetPendingMessages: waiting messages created after `after_timestamp`, oldest first.
pub fn pending_after(
    view: &dyn View,
    addr: &MailboxAddr,
    after_timestamp: Millis,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let mut out = mailbox::pending(view, addr, 0, limit)?;
    out.retain(|d| d.message.created_at > after_timestamp);
    Ok(out)
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
    validate::party_id("party_id", party_id)?;
    who.must_be("party_id", party_id)?;
    validate::text("error_message", error_message, 1024)?;
    let message = require_message(tx, message_id, session_id)?;
    let (addr, seq) = find_entry(&message, party_id).ok_or_else(|| {
        Error::denied(format!("message {message_id} was not sent to {party_id:?}"))
    })?;
    let status = mailbox::settle(tx, &addr, seq, ok, error_message, now)?;
    if addr == MailboxAddr::events(party_id) {
        // A session event has no audience but its recipient: once settled, it is gone.
        mailbox::remove_message(tx, &message.id)?;
    }
    Ok(Settled {
        status,
        mailbox: addr,
        seq,
    })
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
