//! The directory: registering this party, heartbeats, and published encryption keys (checked
//! against their party's identity key before anything is sealed to them).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cohort_crypto::identity::{self, encryption_key_message, ENCRYPTION_KEY_DOMAIN};
use cohort_crypto::seal::EncryptionKeyPair;
use cohort_wire::cohort::{EncryptionKey, GetEncryptionKeysRequest, PublishEncryptionKeyRequest};
use cohort_wire::router::{
    GetRegisteredPartiesRequest, HeartbeatRequest, NotificationChannel, RegisterPartyRequest,
    RegisteredParty,
};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::ClientError;

/// What a heartbeat learns from the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The relay's clock, ms since the Unix epoch.
    pub server_timestamp: i64,
    /// Messages waiting for this party across its sessions.
    pub pending_messages: i32,
}

/// A party's keys, as published and verified: its Ed25519 identity key and the X25519
/// encryption key that identity signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerKeys {
    pub identity: [u8; 32],
    pub encryption: [u8; 32],
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Checks one published key: well-formed, and signed by the identity key it comes with.
pub(crate) fn verify_published_key(
    url: &str,
    key: &EncryptionKey,
) -> Result<PeerKeys, ClientError> {
    let bad = |reason: &str| {
        ClientError::bad_response(
            url,
            "Keys/GetEncryptionKeys",
            format!("party {:?}: {reason}", key.party_id),
        )
    };
    let identity_key: [u8; 32] = key
        .identity_key
        .as_slice()
        .try_into()
        .map_err(|_| bad("identity_key is not 32 bytes"))?;
    let encryption: [u8; 32] = key
        .encryption_key
        .as_slice()
        .try_into()
        .map_err(|_| bad("encryption_key is not 32 bytes"))?;
    identity::verify(
        &identity_key,
        ENCRYPTION_KEY_DOMAIN,
        &encryption_key_message(&key.party_id, &encryption),
        &key.signature,
    )
    .map_err(|_| ClientError::BadKeySignature {
        url: url.to_string(),
        party_id: key.party_id.clone(),
    })?;
    Ok(PeerKeys {
        identity: identity_key,
        encryption,
    })
}

impl Client {
    /// Announces this party: `role` is `persistent`, `delegate` or `temporary`; a
    /// `notification` channel puts it in offline (asynchronous) mode. Returns when the relay
    /// first registered it (ms since the Unix epoch).
    pub async fn register(
        &self,
        role: &str,
        version: &str,
        notification: Option<NotificationChannel>,
    ) -> Result<i64, ClientError> {
        let req = RegisterPartyRequest {
            party_id: self.party_id().to_string(),
            party_role: role.to_string(),
            version: version.to_string(),
            notification,
        };
        let r = self
            .call("MessageRouter/RegisterParty", || {
                let mut c = self.router();
                let req = req.clone();
                async move { c.register_party(req).await }
            })
            .await?;
        Ok(r.registered_at)
    }

    /// One heartbeat: keeps this party marked online.
    pub async fn heartbeat(&self) -> Result<Heartbeat, ClientError> {
        let r = self
            .call("MessageRouter/Heartbeat", || {
                let mut c = self.router();
                let req = HeartbeatRequest {
                    party_id: self.party_id().to_string(),
                    timestamp: now_ms(),
                };
                async move { c.heartbeat(req).await }
            })
            .await?;
        Ok(Heartbeat {
            server_timestamp: r.server_timestamp,
            pending_messages: r.pending_messages,
        })
    }

    /// Sends a heartbeat every `every` in the background until the handle is aborted.
    /// Failures are logged and the next beat tries again.
    pub fn spawn_heartbeat(&self, every: Duration) -> JoinHandle<()> {
        let client = self.clone();
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = client.heartbeat().await {
                    tracing::warn!(party = %client.party_id(), error = %e, "heartbeat failed; will retry");
                }
            }
        })
    }

    /// Registered parties, optionally only those of `role_filter` (empty: any) or online.
    pub async fn parties(
        &self,
        role_filter: &str,
        only_online: bool,
    ) -> Result<Vec<RegisteredParty>, ClientError> {
        let req = GetRegisteredPartiesRequest {
            role_filter: role_filter.to_string(),
            only_online,
        };
        let r = self
            .call("MessageRouter/GetRegisteredParties", || {
                let mut c = self.router();
                let req = req.clone();
                async move { c.get_registered_parties(req).await }
            })
            .await?;
        Ok(r.parties)
    }

    /// Publishes `key`'s public half, signed by this party's identity key, and keeps `key`
    /// to open what others seal to it. Keep the same key for the life of the sessions that
    /// use it (persist it with `cohort_crypto::keystore`): messages sealed to an older key
    /// no longer open.
    pub async fn publish_encryption_key(&self, key: &EncryptionKeyPair) -> Result<(), ClientError> {
        let public = key.public();
        let signature = self
            .inner
            .identity
            .sign(
                ENCRYPTION_KEY_DOMAIN,
                &encryption_key_message(self.party_id(), &public),
            )
            .to_vec();
        let req = PublishEncryptionKeyRequest {
            encryption_key: public.to_vec(),
            signature,
        };
        self.call("Keys/PublishEncryptionKey", || {
            let mut c = self.keys_rpc();
            let req = req.clone();
            async move { c.publish_encryption_key(req).await }
        })
        .await?;
        *self
            .inner
            .encryption_key
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        Ok(())
    }

    /// Generates a fresh encryption key, publishes it and keeps it. Returns it so the caller
    /// can store it.
    pub async fn generate_encryption_key(&self) -> Result<EncryptionKeyPair, ClientError> {
        let key = EncryptionKeyPair::generate();
        self.publish_encryption_key(&key).await?;
        Ok(key)
    }

    /// The encryption key this client published, if it did.
    pub fn encryption_key(&self) -> Option<EncryptionKeyPair> {
        self.inner
            .encryption_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Pins `party_id`'s identity key: keys the relay returns for it under another identity
    /// are refused. Keys seen first are pinned automatically (trust on first use).
    pub fn trust_identity(&self, party_id: &str, identity_key: [u8; 32]) {
        self.inner
            .identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(party_id.to_string(), identity_key);
    }

    /// The verified keys of `party_ids`. Parties without a published key are left out. Every
    /// key's signature is checked against its party's identity key, and that identity key
    /// against the one this client pinned for the party; any failure is an error.
    pub async fn peer_keys<S: AsRef<str>>(
        &self,
        party_ids: &[S],
    ) -> Result<HashMap<String, PeerKeys>, ClientError> {
        let asked: Vec<String> = party_ids.iter().map(|p| p.as_ref().to_string()).collect();
        let req = GetEncryptionKeysRequest {
            party_ids: asked.clone(),
        };
        let r = self
            .call("Keys/GetEncryptionKeys", || {
                let mut c = self.keys_rpc();
                let req = req.clone();
                async move { c.get_encryption_keys(req).await }
            })
            .await?;
        let mut out = HashMap::with_capacity(r.keys.len());
        for key in &r.keys {
            if !asked.contains(&key.party_id) {
                return Err(ClientError::bad_response(
                    self.url(),
                    "Keys/GetEncryptionKeys",
                    format!(
                        "returned a key for {:?}, which was not asked for",
                        key.party_id
                    ),
                ));
            }
            let keys = verify_published_key(self.url(), key)?;
            self.pin_identity(&key.party_id, keys.identity)?;
            out.insert(key.party_id.clone(), keys);
        }
        Ok(out)
    }

    /// The verified X25519 encryption keys of `party_ids` (see [`Client::peer_keys`]).
    pub async fn encryption_keys<S: AsRef<str>>(
        &self,
        party_ids: &[S],
    ) -> Result<HashMap<String, [u8; 32]>, ClientError> {
        Ok(self
            .peer_keys(party_ids)
            .await?
            .into_iter()
            .map(|(p, k)| (p, k.encryption))
            .collect())
    }

    /// The verified keys of one party, or [`ClientError::NoEncryptionKey`].
    pub async fn peer(&self, party_id: &str) -> Result<PeerKeys, ClientError> {
        self.peer_keys(&[party_id])
            .await?
            .remove(party_id)
            .ok_or_else(|| ClientError::NoEncryptionKey {
                url: self.url().to_string(),
                party_id: party_id.to_string(),
            })
    }

    fn pin_identity(&self, party_id: &str, identity_key: [u8; 32]) -> Result<(), ClientError> {
        let mut pinned = self
            .inner
            .identities
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match pinned.get(party_id) {
            Some(known) if *known != identity_key => Err(ClientError::IdentityChanged {
                url: self.url().to_string(),
                party_id: party_id.to_string(),
                known: hex::encode(known),
                returned: hex::encode(identity_key),
            }),
            Some(_) => Ok(()),
            None => {
                pinned.insert(party_id.to_string(), identity_key);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_crypto::identity::IdentityKey;

    fn published(party_id: &str, identity: &IdentityKey, enc: [u8; 32]) -> EncryptionKey {
        EncryptionKey {
            party_id: party_id.into(),
            identity_key: identity.public().to_vec(),
            encryption_key: enc.to_vec(),
            signature: identity
                .sign(
                    ENCRYPTION_KEY_DOMAIN,
                    &encryption_key_message(party_id, &enc),
                )
                .to_vec(),
            published_at: 1,
        }
    }

    #[test]
    fn correctly_signed_key_verifies() {
        let alice = IdentityKey::generate();
        let enc = EncryptionKeyPair::generate().public();
        let k = verify_published_key("http://r", &published("alice", &alice, enc)).unwrap();
        assert_eq!(k.identity, alice.public());
        assert_eq!(k.encryption, enc);
    }

    #[test]
    fn swapped_key_or_party_or_identity_is_refused() {
        let alice = IdentityKey::generate();
        let mallory = IdentityKey::generate();
        let enc = EncryptionKeyPair::generate().public();

        let mut swapped = published("alice", &alice, enc);
        swapped.encryption_key = EncryptionKeyPair::generate().public().to_vec();
        assert!(matches!(
            verify_published_key("http://r", &swapped),
            Err(ClientError::BadKeySignature { party_id, .. }) if party_id == "alice"
        ));

        let mut renamed = published("alice", &alice, enc);
        renamed.party_id = "bob".into();
        assert!(matches!(
            verify_published_key("http://r", &renamed),
            Err(ClientError::BadKeySignature { .. })
        ));

        // The relay substitutes its own identity key but keeps Alice's signature.
        let mut other_identity = published("alice", &alice, enc);
        other_identity.identity_key = mallory.public().to_vec();
        assert!(matches!(
            verify_published_key("http://r", &other_identity),
            Err(ClientError::BadKeySignature { .. })
        ));

        let mut short = published("alice", &alice, enc);
        short.encryption_key.truncate(31);
        assert!(matches!(
            verify_published_key("http://r", &short),
            Err(ClientError::BadResponse { .. })
        ));
    }
}
