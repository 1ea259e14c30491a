//! Sessions: creating them (coordinators), joining, readiness, completion and failure reports.

use std::collections::HashMap;
use std::time::Duration;

use cohort_wire::cohort::{
    CreateSessionRequest, GetSessionRequest, JoinRequest, ListSessionsRequest, Participant,
    ReportFailureRequest, SessionSummary,
};
use cohort_wire::router::{
    JoinSessionRequest, MarkPartyReadyRequest, PartyInfo, ReportCompletionRequest,
};
use rand::RngCore;

use crate::client::Client;
use crate::error::ClientError;

/// What a coordinator asks for in [`Client::create_session`].
#[derive(Debug, Clone, Default)]
pub struct CreateSession {
    /// `keygen`, `sign`, `reshare`, or another protocol name.
    pub session_type: String,
    pub n: u16,
    pub t: u16,
    /// The participants, in index order (index 1 first). Empty: the relay picks `n` online
    /// parties of `role_filter`.
    pub parties: Vec<String>,
    pub role_filter: String,
    /// Sign sessions: the digest to sign.
    pub message_hash: Vec<u8>,
    /// Lifetime; `None` takes the relay's default.
    pub expires_in: Option<Duration>,
    /// A retry with the same key returns the same session. Empty: the client makes one, so
    /// its own retries (relay restarting) never create two sessions.
    pub idempotency_key: String,
    /// Opaque session descriptor, stored and returned as is, and its signature.
    pub descriptor: Vec<u8>,
    pub descriptor_signature: Vec<u8>,
    /// Party id -> the identity key that alone may join as it. Parties left out get the key
    /// their id is enrolled to on the relay.
    pub party_keys: HashMap<String, [u8; 32]>,
}

/// A session the relay created (or had created for the same idempotency key).
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub session_id: String,
    /// Party id -> its join token. Empty when `created` is false: the relay hands tokens out
    /// once (each party also gets its own in its `session_created` event).
    pub join_tokens: HashMap<String, String>,
    pub participants: Vec<Participant>,
    /// ms since the Unix epoch.
    pub expires_at: i64,
    /// False when an earlier call with the same idempotency key created it.
    pub created: bool,
}

/// What a party learns by joining a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    pub session_id: String,
    /// This party's index, 1-based.
    pub party_index: u16,
    /// Every participant (this party included) with its index, in index order.
    pub parties: Vec<(String, u16)>,
    pub session_type: String,
    pub n: u16,
    pub t: u16,
    /// Sign sessions: the digest to sign.
    pub message_hash: Vec<u8>,
    /// The session's status when joined (`created`, `in_progress`, ...).
    pub status: String,
}

const JOIN: &str = "MessageRouter/JoinSession";

fn join_info(
    client: &Client,
    session_id: &str,
    r: cohort_wire::router::JoinSessionResponse,
) -> Result<JoinInfo, ClientError> {
    let bad = |reason: String| ClientError::bad_response(client.url(), JOIN, reason);
    let info = r
        .session_info
        .ok_or_else(|| bad("session_info is missing".into()))?;
    let small = |what: &str, v: i32| {
        u16::try_from(v).map_err(|_| bad(format!("{what} {v} is not a party count or index")))
    };
    let n = small("threshold_n", info.threshold_n)?;
    let t = small("threshold_t", info.threshold_t)?;
    let mut parties = r
        .other_parties
        .iter()
        .map(|p: &PartyInfo| Ok((p.party_id.clone(), small("party_index", p.party_index)?)))
        .collect::<Result<Vec<_>, ClientError>>()?;
    parties.sort_by_key(|(_, i)| *i);
    let party_index = small("party_index", r.party_index)?;
    let listed = parties
        .iter()
        .any(|(p, i)| p == client.party_id() && *i == party_index);
    if party_index == 0 || !listed {
        return Err(bad(format!(
            "party_index {party_index} does not match this party's entry in the participant list"
        )));
    }
    if info.session_id != session_id {
        return Err(bad(format!(
            "answered for session {:?}, not {session_id:?}",
            info.session_id
        )));
    }
    Ok(JoinInfo {
        session_id: info.session_id,
        party_index,
        parties,
        session_type: info.session_type,
        n,
        t,
        message_hash: info.message_hash,
        status: info.status,
    })
}

impl Client {
    /// Creates a session (coordinator role needed).
    pub async fn create_session(&self, req: CreateSession) -> Result<Created, ClientError> {
        let idempotency_key = if req.idempotency_key.is_empty() {
            let mut b = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut b);
            hex::encode(b)
        } else {
            req.idempotency_key
        };
        let expires_in_ms = match req.expires_in {
            None => 0,
            Some(d) => i64::try_from(d.as_millis())
                .map_err(|_| ClientError::InvalidArgument("expires_in is too long".into()))?
                .max(1),
        };
        let wire = CreateSessionRequest {
            session_type: req.session_type,
            threshold_n: i32::from(req.n),
            threshold_t: i32::from(req.t),
            parties: req.parties,
            role_filter: req.role_filter,
            message_hash: req.message_hash,
            expires_in_ms,
            idempotency_key,
            descriptor: req.descriptor,
            descriptor_signature: req.descriptor_signature,
            party_keys: req
                .party_keys
                .into_iter()
                .map(|(p, k)| (p, k.to_vec()))
                .collect(),
        };
        let r = self
            .call("Sessions/CreateSession", || {
                let mut c = self.sessions_rpc();
                let req = wire.clone();
                async move { c.create_session(req).await }
            })
            .await?;
        Ok(Created {
            session_id: r.session_id,
            join_tokens: r.join_tokens,
            participants: r.participants,
            expires_at: r.expires_at,
            created: r.created,
        })
    }

    /// Sessions this party may see, optionally only those in `status`; at most `limit`
    /// (0: the relay's default).
    pub async fn list_sessions(
        &self,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SessionSummary>, ClientError> {
        let req = ListSessionsRequest {
            status: status.unwrap_or_default().to_string(),
            limit: i32::try_from(limit).unwrap_or(i32::MAX),
        };
        let r = self
            .call("Sessions/ListSessions", || {
                let mut c = self.sessions_rpc();
                let req = req.clone();
                async move { c.list_sessions(req).await }
            })
            .await?;
        Ok(r.sessions)
    }

    /// One session's summary: status, participants, results, failure reason.
    pub async fn session(&self, session_id: &str) -> Result<SessionSummary, ClientError> {
        let req = GetSessionRequest {
            session_id: session_id.to_string(),
        };
        self.call("Sessions/GetSession", || {
            let mut c = self.sessions_rpc();
            let req = req.clone();
            async move { c.get_session(req).await }
        })
        .await
    }

    /// Joins a session with this party's join token (from the `session_created` event or the
    /// coordinator). Joining again with the same token is allowed (a restarted party).
    pub async fn join(&self, session_id: &str, join_token: &str) -> Result<JoinInfo, ClientError> {
        let req = JoinSessionRequest {
            session_id: session_id.to_string(),
            party_id: self.party_id().to_string(),
            join_token: join_token.to_string(),
            device_info: None,
        };
        let r = self
            .call(JOIN, || {
                let mut c = self.router();
                let req = req.clone();
                async move { c.join_session(req).await }
            })
            .await?;
        join_info(self, session_id, r)
    }

    /// Joins and (with `ready`) marks this party ready in one call, and returns the session
    /// as it then stands (its signed descriptor included) and whether every participant is
    /// ready: one round trip where join, GetSession and ready take three.
    pub async fn join_ready(
        &self,
        session_id: &str,
        join_token: &str,
        ready: bool,
    ) -> Result<(JoinInfo, SessionSummary, bool), ClientError> {
        const RPC: &str = "Sessions/Join";
        let req = JoinRequest {
            session_id: session_id.to_string(),
            party_id: self.party_id().to_string(),
            join_token: join_token.to_string(),
            ready,
        };
        let r = self
            .call(RPC, || {
                let mut c = self.sessions_rpc();
                let req = req.clone();
                async move { c.join(req).await }
            })
            .await?;
        let summary = r
            .session
            .ok_or_else(|| ClientError::bad_response(self.url(), RPC, "session is missing"))?;
        // The same checks as JoinSession's answer, on the same fields.
        let as_router = cohort_wire::router::JoinSessionResponse {
            success: true,
            other_parties: summary
                .participants
                .iter()
                .map(|p| PartyInfo {
                    party_id: p.party_id.clone(),
                    party_index: p.party_index,
                    device_info: None,
                })
                .collect(),
            party_index: r.party_index,
            session_info: Some(cohort_wire::router::SessionInfo {
                session_id: summary.session_id.clone(),
                session_type: summary.session_type.clone(),
                threshold_n: summary.threshold_n,
                threshold_t: summary.threshold_t,
                message_hash: summary.message_hash.clone(),
                status: summary.status.clone(),
            }),
        };
        let info = join_info(self, session_id, as_router)?;
        Ok((info, summary, r.all_ready))
    }

    /// Marks this party ready; returns whether every participant now is (the session started).
    pub async fn ready(&self, session_id: &str) -> Result<bool, ClientError> {
        let req = MarkPartyReadyRequest {
            session_id: session_id.to_string(),
            party_id: self.party_id().to_string(),
        };
        let r = self
            .call("MessageRouter/MarkPartyReady", || {
                let mut c = self.router();
                let req = req.clone();
                async move { c.mark_party_ready(req).await }
            })
            .await?;
        Ok(r.all_ready)
    }

    /// Reports this party's result; returns whether every participant has now reported.
    pub async fn report_completion(
        &self,
        session_id: &str,
        public_key: &[u8],
        signature: &[u8],
    ) -> Result<bool, ClientError> {
        let req = ReportCompletionRequest {
            session_id: session_id.to_string(),
            party_id: self.party_id().to_string(),
            public_key: public_key.to_vec(),
            signature: signature.to_vec(),
        };
        let r = self
            .call("MessageRouter/ReportCompletion", || {
                let mut c = self.router();
                let req = req.clone();
                async move { c.report_completion(req).await }
            })
            .await?;
        Ok(r.all_completed)
    }

    /// Reports that the protocol failed, naming the culprit when known; the session fails.
    pub async fn report_failure(
        &self,
        session_id: &str,
        reason: &str,
        culprit: Option<&str>,
    ) -> Result<(), ClientError> {
        let req = ReportFailureRequest {
            session_id: session_id.to_string(),
            party_id: self.party_id().to_string(),
            reason: reason.to_string(),
            culprit: culprit.unwrap_or_default().to_string(),
        };
        self.call("Sessions/ReportFailure", || {
            let mut c = self.sessions_rpc();
            let req = req.clone();
            async move { c.report_failure(req).await }
        })
        .await?;
        Ok(())
    }
}
