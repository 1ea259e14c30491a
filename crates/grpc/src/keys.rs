//! `cohort.v1.Keys`: published X25519 encryption keys, signed by identity keys.

use std::sync::Arc;

use cohort_wire::cohort::keys_server::Keys;
use cohort_wire::cohort::{
    EncryptionKey, GetEncryptionKeysRequest, GetEncryptionKeysResponse,
    PublishEncryptionKeyRequest, PublishEncryptionKeyResponse,
};
use tonic::{Request, Response, Status};

use super::{principal, status};
use cohort_relay::Relay;

pub struct KeysService {
    pub relay: Arc<Relay>,
}

#[tonic::async_trait]
impl Keys for KeysService {
    async fn publish_encryption_key(
        &self,
        req: Request<PublishEncryptionKeyRequest>,
    ) -> Result<Response<PublishEncryptionKeyResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let at = self
            .relay
            .publish_encryption_key(who, r.encryption_key, r.signature)
            .await
            .map_err(status)?;
        Ok(Response::new(PublishEncryptionKeyResponse {
            published_at: at,
        }))
    }

    async fn get_encryption_keys(
        &self,
        req: Request<GetEncryptionKeysRequest>,
    ) -> Result<Response<GetEncryptionKeysResponse>, Status> {
        principal(&self.relay, &req).await?;
        let parties = self
            .relay
            .encryption_keys(req.into_inner().party_ids)
            .await
            .map_err(status)?;
        let keys = parties
            .into_iter()
            .filter_map(|p| {
                let k = p.encryption_key?;
                Some(EncryptionKey {
                    party_id: p.id,
                    identity_key: p.identity_key,
                    encryption_key: k.encryption_key,
                    signature: k.signature,
                    published_at: k.published_at,
                })
            })
            .collect();
        Ok(Response::new(GetEncryptionKeysResponse { keys }))
    }
}
