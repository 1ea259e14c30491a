//! `cohort.v1.Auth`: challenge-response login with an Ed25519 identity key.

use std::sync::Arc;

use cohort_wire::cohort::auth_server::Auth;
use cohort_wire::cohort::{GetChallengeRequest, GetChallengeResponse, LoginRequest, LoginResponse};
use tonic::{Request, Response, Status};

use super::{admit, status};
use cohort_relay::{Action, Relay};

pub struct AuthService {
    pub relay: Arc<Relay>,
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn get_challenge(
        &self,
        req: Request<GetChallengeRequest>,
    ) -> Result<Response<GetChallengeResponse>, Status> {
        admit(&self.relay, &req, Action::Challenge, None)?;
        let r = req.into_inner();
        let c = self
            .relay
            .challenge(r.party_id, r.public_key)
            .await
            .map_err(status)?;
        Ok(Response::new(GetChallengeResponse {
            challenge_id: c.challenge_id,
            challenge: c.challenge,
            expires_at: c.expires_at,
        }))
    }

    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        admit(&self.relay, &req, Action::Login, None)?;
        let r = req.into_inner();
        let t = self
            .relay
            .login(r.challenge_id, r.party_id, r.public_key, r.signature)
            .await
            .map_err(status)?;
        Ok(Response::new(LoginResponse {
            access_token: t.access_token,
            expires_at: t.expires_at,
            coordinator: t.principal.coordinator,
        }))
    }
}
