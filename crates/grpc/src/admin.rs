//! `cohort.v1.Admin`: server information.

use std::sync::Arc;

use cohort_wire::cohort::admin_server::Admin;
use cohort_wire::cohort::{ServerInfoRequest, ServerInfoResponse};
use tonic::{Request, Response, Status};

use super::{principal, status};
use cohort_relay::{now_ms, Relay};

pub struct AdminService {
    pub relay: Arc<Relay>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn server_info(
        &self,
        req: Request<ServerInfoRequest>,
    ) -> Result<Response<ServerInfoResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let open = if who.coordinator {
            let sessions = self
                .relay
                .list_sessions(who, None, usize::MAX)
                .await
                .map_err(status)?;
            sessions.iter().filter(|s| !s.status.is_closed()).count() as i64
        } else {
            0
        };
        Ok(Response::new(ServerInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            server_time: now_ms(),
            sessions_open: open,
        }))
    }
}
