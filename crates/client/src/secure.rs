//! End-to-end sealing over a session's mailbox: every payload is signed by the sender's
//! identity key, and point-to-point payloads are also HPKE-sealed to the recipient's published
//! encryption key (see `cohort_crypto::envelope`). The relay sees ciphertext and signatures
//! only; it can delay or drop messages, but what it alters or forges is detected here and
//! blamed on the party named as sender.
//!
//! A session names each participant's identity key. A payload is verified against the key
//! the session names for its sender, never merely the one the sender published, and nothing
//! is sealed to a party whose published key another identity signed: a key that took a
//! participant's id (before enrollment, or through a relay that lies) is refused.

use std::collections::HashMap;

use cohort_crypto::envelope::{open_envelope, seal_envelope, Context, EnvelopeError};
use cohort_crypto::seal::EncryptionKeyPair;

use crate::client::Client;
use crate::directory::PeerKeys;
use crate::error::{ClientError, RejectReason, Rejected};
use crate::inbox::{Inbox, Received};

/// A payload that verified (and, point-to-point, opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub message_id: String,
    pub from: String,
    pub round: i32,
    pub message_type: String,
    pub is_broadcast: bool,
    /// What the sender passed to [`SecureSession::send_sealed`].
    pub body: Vec<u8>,
    /// ms since the Unix epoch, relay clock.
    pub created_at: i64,
}

/// One session's sealed channel for this party: sends signed (and, point-to-point, sealed)
/// payloads, and receives, verifies and opens them. Made by [`Client::secure_session`].
///
/// Peers' keys are fetched from the relay when first needed, verified against their identity
/// keys, and cached for the session.
pub struct SecureSession {
    client: Client,
    inbox: Inbox,
    my_key: EncryptionKeyPair,
    peers: HashMap<String, PeerKeys>,
    /// The identity key the session names for each participant: given when the session
    /// channel was made (from a descriptor this party verified), or read from the relay's
    /// session when first needed.
    named: Option<HashMap<String, [u8; 32]>>,
    /// A message whose sender's keys could not be fetched yet; tried again first.
    held: Option<Received>,
}

fn reject_reason(e: EnvelopeError) -> RejectReason {
    match e {
        EnvelopeError::BadSignature => RejectReason::BadSignature,
        EnvelopeError::DecryptFailed => RejectReason::DecryptFailed,
        EnvelopeError::Malformed(why) => RejectReason::Malformed(why.to_string()),
        EnvelopeError::BadRecipientKey | EnvelopeError::ContextMismatch(_) => {
            RejectReason::Malformed(e.to_string())
        }
    }
}

impl Client {
    /// The sealed channel of `session_id`, opening this party's mailbox for it. Needs this
    /// client's encryption key ([`Client::publish_encryption_key`]).
    ///
    /// Each participant's identity key is the one the relay's session names (read once, when
    /// first needed). When this party has the keys from a source it trusts more than the
    /// relay, such as a descriptor the coordinator signed, use
    /// [`Client::secure_session_with_identities`].
    pub fn secure_session(&self, session_id: &str) -> Result<SecureSession, ClientError> {
        self.secure_session_named(session_id, None)
    }

    /// [`Client::secure_session`] with each participant's identity key given by the caller
    /// (party id -> Ed25519 key): a payload signed by any other key for that party is refused,
    /// and nothing is sealed to an encryption key another identity signed. Parties not in
    /// `identities` are checked against the key they published.
    pub fn secure_session_with_identities(
        &self,
        session_id: &str,
        identities: HashMap<String, [u8; 32]>,
    ) -> Result<SecureSession, ClientError> {
        self.secure_session_named(session_id, Some(identities))
    }

    fn secure_session_named(
        &self,
        session_id: &str,
        named: Option<HashMap<String, [u8; 32]>>,
    ) -> Result<SecureSession, ClientError> {
        let my_key = self
            .encryption_key()
            .ok_or(ClientError::NoOwnEncryptionKey)?;
        Ok(SecureSession {
            client: self.clone(),
            inbox: self.messages(session_id),
            my_key,
            peers: HashMap::new(),
            named,
            held: None,
        })
    }
}

impl SecureSession {
    pub fn session_id(&self) -> &str {
        self.inbox.session_id()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `party_id`'s verified keys, from the cache or the relay. Refused
    /// ([`ClientError::IdentityChanged`]) when the identity that signed its published
    /// encryption key is not the one the session names for it.
    pub async fn peer(&mut self, party_id: &str) -> Result<PeerKeys, ClientError> {
        if let Some(k) = self.peers.get(party_id) {
            return Ok(*k);
        }
        let k = self.client.peer(party_id).await?;
        if let Some(named) = self.named_identity(party_id).await? {
            if named != k.identity {
                return Err(ClientError::IdentityChanged {
                    url: self.client.url().to_string(),
                    party_id: party_id.to_string(),
                    known: hex::encode(named),
                    returned: hex::encode(k.identity),
                });
            }
        }
        self.peers.insert(party_id.to_string(), k);
        Ok(k)
    }

    /// The identity key the session names for `party_id`, reading the session from the relay
    /// the first time. `None` if the session names none for it.
    pub async fn named_identity(
        &mut self,
        party_id: &str,
    ) -> Result<Option<[u8; 32]>, ClientError> {
        if self.named.is_none() {
            let summary = self.client.session(self.session_id()).await?;
            let named = summary
                .participants
                .iter()
                .filter_map(|p| {
                    let key: [u8; 32] = p.identity_key.as_slice().try_into().ok()?;
                    Some((p.party_id.clone(), key))
                })
                .collect();
            self.named = Some(named);
        }
        Ok(self.named.as_ref().and_then(|n| n.get(party_id)).copied())
    }

    /// The key `from`'s payloads must be signed with: the one the session names, or (if it
    /// names none) the identity that signed `from`'s published encryption key.
    async fn sender_identity(&mut self, from: &str) -> Result<[u8; 32], ClientError> {
        match self.named_identity(from).await? {
            Some(named) => Ok(named),
            None => Ok(self.peer(from).await?.identity),
        }
    }

    /// Sends `body` to `to` (sealed to its verified encryption key) or, with `None`, to every
    /// other participant (signed, not sealed). Returns the message id.
    pub async fn send_sealed(
        &mut self,
        to: Option<&str>,
        round: i32,
        message_type: &str,
        body: &[u8],
    ) -> Result<String, ClientError> {
        if to == Some(self.client.party_id()) {
            return Err(ClientError::InvalidArgument(
                "a party cannot send a sealed message to itself".into(),
            ));
        }
        let recipient_key = match to {
            Some(r) => Some(self.peer(r).await?.encryption),
            None => None,
        };
        let ctx = Context {
            session_id: self.session_id().to_string(),
            sender: self.client.party_id().to_string(),
            recipient: to.map(str::to_string),
            round,
            message_type: message_type.to_string(),
        };
        let envelope = seal_envelope(
            &self.client.inner.identity,
            &ctx,
            recipient_key.as_ref().map(|k| k.as_slice()),
            body,
        )
        .map_err(|e| ClientError::InvalidArgument(format!("cannot seal: {e}")))?;
        let to: Vec<&str> = to.into_iter().collect();
        self.client
            .send(self.session_id(), &to, round, message_type, envelope)
            .await
    }

    /// The next message, verified and opened. A message that fails is settled as failed at
    /// the relay and returned as [`ClientError::Rejected`] naming the sender and the reason;
    /// the next call continues with the following message. If the sender's keys cannot be
    /// fetched, the error is returned and the same message is tried again on the next call.
    pub async fn recv_opened(&mut self) -> Result<Opened, ClientError> {
        let m = match self.held.take() {
            Some(m) => m,
            None => self.inbox.recv().await?,
        };
        let sender_identity = match self.sender_identity(&m.from).await {
            Ok(k) => k,
            Err(e) => {
                self.held = Some(m);
                return Err(e);
            }
        };
        let me = self.client.party_id().to_string();
        let ctx = Context {
            session_id: m.session_id.clone(),
            sender: m.from.clone(),
            recipient: (!m.is_broadcast).then_some(me),
            round: m.round,
            message_type: m.message_type.clone(),
        };
        let my_key = (!m.is_broadcast).then_some(&self.my_key);
        match open_envelope(&ctx, &sender_identity, my_key, &m.payload) {
            Ok(body) => Ok(Opened {
                message_id: m.message_id,
                from: m.from,
                round: m.round,
                message_type: m.message_type,
                is_broadcast: m.is_broadcast,
                body,
                created_at: m.created_at,
            }),
            Err(e) => {
                let rejected = Rejected {
                    session_id: m.session_id,
                    message_id: m.message_id,
                    culprit: m.from,
                    round: m.round,
                    message_type: m.message_type,
                    reason: reject_reason(e),
                };
                tracing::warn!(relay = %self.client.url(), "{rejected}");
                // No redelivery can make it verify: settle it so it is not sent again.
                if let Err(e) = self
                    .inbox
                    .reject(&rejected.message_id, &rejected.reason.to_string())
                    .await
                {
                    tracing::warn!(message = %rejected.message_id, error = %e, "could not settle a refused message");
                }
                Err(ClientError::Rejected(Box::new(rejected)))
            }
        }
    }

    /// Acknowledges a processed message.
    pub async fn ack(&self, message_id: &str) -> Result<(), ClientError> {
        self.inbox.ack(message_id).await
    }
}
