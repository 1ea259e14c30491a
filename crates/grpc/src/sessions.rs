//! `cohort.v1.Sessions`: creating and inspecting sessions, failure reports, delegate shares.

use std::sync::Arc;

use cohort_core::session::{CreateRequest, Session, SessionStatus};
use cohort_wire::cohort::sessions_server::Sessions;
use cohort_wire::cohort::{
    CreateSessionRequest, CreateSessionResponse, DelegateShare, GetDelegateSharesRequest,
    GetDelegateSharesResponse, GetSessionRequest, JoinRequest, JoinResponse, ListSessionsRequest,
    ListSessionsResponse, Participant, ReportFailureRequest, ReportFailureResponse, SessionSummary,
};
use tonic::{Request, Response, Status};

use super::{admit, limit, principal, status};
use cohort_core::Error;
use cohort_relay::{Action, Relay};

pub struct SessionsService {
    pub relay: Arc<Relay>,
}

fn participants(s: &Session) -> Vec<Participant> {
    s.participants
        .iter()
        .map(|p| Participant {
            party_id: p.party_id.clone(),
            party_index: i32::from(p.index),
            joined: p.joined,
            ready: p.ready,
            completed: p.report.is_some(),
            identity_key: p.identity_key.to_vec(),
        })
        .collect()
}

pub fn summary(s: Session) -> SessionSummary {
    SessionSummary {
        participants: participants(&s),
        session_id: s.id,
        session_type: s.session_type,
        status: s.status.as_str().into(),
        threshold_n: i32::from(s.n),
        threshold_t: i32::from(s.t),
        created_at: s.created_at,
        expires_at: s.expires_at,
        failure_reason: s.failure_reason,
        failure_culprit: s.failure_culprit,
        waiting_for: s.waiting_for,
        public_key: s.public_key,
        signature: s.signature,
        message_hash: s.message_hash,
        descriptor: s.descriptor,
        descriptor_signature: s.descriptor_signature,
        creator: s.creator,
        result: s.result,
    }
}

#[tonic::async_trait]
impl Sessions for SessionsService {
    async fn create_session(
        &self,
        req: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        admit(&self.relay, &req, Action::CreateSession, Some(&who))?;
        let r = req.into_inner();
        let create = CreateRequest {
            session_type: r.session_type,
            n: r.threshold_n,
            t: r.threshold_t,
            parties: r.parties,
            role_filter: r.role_filter,
            message_hash: r.message_hash,
            expires_in_ms: r.expires_in_ms,
            idempotency_key: r.idempotency_key,
            descriptor: r.descriptor,
            descriptor_signature: r.descriptor_signature,
            party_keys: r.party_keys.into_iter().collect(),
        };
        let (s, join_tokens, created) = self
            .relay
            .create_session(who, create)
            .await
            .map_err(status)?;
        Ok(Response::new(CreateSessionResponse {
            join_tokens: join_tokens.into_iter().collect(),
            participants: participants(&s),
            session_id: s.id,
            expires_at: s.expires_at,
            created,
        }))
    }

    async fn list_sessions(
        &self,
        req: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let filter = if r.status.is_empty() {
            None
        } else {
            Some(SessionStatus::parse(&r.status).ok_or_else(|| {
                status(Error::invalid(format!(
                    "status {} is not one of created, in_progress, completed, failed, expired",
                    cohort_core::validate::quoted(&r.status)
                )))
            })?)
        };
        let sessions = self
            .relay
            .list_sessions(who, filter, limit(r.limit, 100, 10_000))
            .await
            .map_err(status)?;
        Ok(Response::new(ListSessionsResponse {
            sessions: sessions.into_iter().map(summary).collect(),
        }))
    }

    async fn get_session(
        &self,
        req: Request<GetSessionRequest>,
    ) -> Result<Response<SessionSummary>, Status> {
        let who = principal(&self.relay, &req).await?;
        let s = self
            .relay
            .session_status(who, req.into_inner().session_id)
            .await
            .map_err(status)?;
        Ok(Response::new(summary(s)))
    }

    async fn get_delegate_shares(
        &self,
        req: Request<GetDelegateSharesRequest>,
    ) -> Result<Response<GetDelegateSharesResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let shares = self
            .relay
            .delegate_shares(who, req.into_inner().session_id)
            .await
            .map_err(status)?;
        Ok(Response::new(GetDelegateSharesResponse {
            shares: shares
                .into_iter()
                .map(|d| DelegateShare {
                    party_id: d.party_id,
                    encrypted_share: d.encrypted_share,
                    public_key: d.public_key,
                    party_index: d.party_index,
                })
                .collect(),
        }))
    }

    async fn report_failure(
        &self,
        req: Request<ReportFailureRequest>,
    ) -> Result<Response<ReportFailureResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        who.must_be("party_id", &r.party_id).map_err(status)?;
        self.relay
            .report_failure(who, r.session_id, r.reason, r.culprit)
            .await
            .map_err(status)?;
        Ok(Response::new(ReportFailureResponse {}))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let party_id = r.party_id.clone();
        let (s, all_ready) = self
            .relay
            .join_ready(who, r.session_id, r.party_id, r.join_token, r.ready)
            .await
            .map_err(status)?;
        let party_index = s
            .participant(&party_id)
            .map(|p| i32::from(p.index))
            .unwrap_or(0);
        Ok(Response::new(JoinResponse {
            session: Some(summary(s)),
            party_index,
            all_ready,
        }))
    }
}
