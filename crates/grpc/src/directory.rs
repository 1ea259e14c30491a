//! `cohort.v1.Directory`: enrollment, which identity key may log in as which party id.

use std::sync::Arc;

use cohort_core::enrollment::Enrollment as CoreEnrollment;
use cohort_wire::cohort::directory_server::Directory;
use cohort_wire::cohort::{
    EnrollRequest, EnrollResponse, Enrollment, ListEnrolledRequest, ListEnrolledResponse,
    UnenrollRequest, UnenrollResponse,
};
use tonic::{Request, Response, Status};

use super::{principal, status};
use cohort_relay::Relay;

pub struct DirectoryService {
    pub relay: Arc<Relay>,
}

fn to_wire(e: CoreEnrollment) -> Enrollment {
    Enrollment {
        party_id: e.party_id,
        identity_key: e.identity_key.to_vec(),
        role: e.role,
        source: e.source.as_str().into(),
        enrolled_by: e.enrolled_by,
        enrolled_at: e.enrolled_at,
    }
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let e = self
            .relay
            .enroll(who, r.party_id, r.identity_key, r.role)
            .await
            .map_err(status)?;
        Ok(Response::new(EnrollResponse {
            enrollment: Some(to_wire(e)),
        }))
    }

    async fn unenroll(
        &self,
        req: Request<UnenrollRequest>,
    ) -> Result<Response<UnenrollResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let removed = self
            .relay
            .unenroll(who, req.into_inner().party_id)
            .await
            .map_err(status)?;
        Ok(Response::new(UnenrollResponse { removed }))
    }

    async fn list_enrolled(
        &self,
        req: Request<ListEnrolledRequest>,
    ) -> Result<Response<ListEnrolledResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let enrollments = self
            .relay
            .enrolled(who, req.into_inner().party_ids)
            .await
            .map_err(status)?;
        Ok(Response::new(ListEnrolledResponse {
            enrollments: enrollments.into_iter().map(to_wire).collect(),
        }))
    }
}
