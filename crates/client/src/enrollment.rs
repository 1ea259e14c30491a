//! Enrollment (coordinators): binding party ids to identity keys before the parties log in.

use cohort_wire::cohort::{EnrollRequest, Enrollment, ListEnrolledRequest, UnenrollRequest};

use crate::client::Client;
use crate::error::ClientError;

impl Client {
    /// Enrolls `party_id` to the Ed25519 key `identity_key`, so that key alone may log in as
    /// it; `role` (`persistent`, `delegate`, `temporary`, or empty for any) is the only role
    /// the party may then register with. Needs the coordinator role.
    pub async fn enroll(
        &self,
        party_id: &str,
        identity_key: &[u8; 32],
        role: &str,
    ) -> Result<Enrollment, ClientError> {
        let req = EnrollRequest {
            party_id: party_id.to_string(),
            identity_key: identity_key.to_vec(),
            role: role.to_string(),
        };
        let r = self
            .call("Directory/Enroll", || {
                let mut c = self.directory_rpc();
                let req = req.clone();
                async move { c.enroll(req).await }
            })
            .await?;
        r.enrollment.ok_or_else(|| {
            ClientError::bad_response(self.url(), "Directory/Enroll", "enrollment is missing")
        })
    }

    /// Unbinds `party_id` from its key (its tokens are revoked); returns whether it was
    /// bound. Needs the coordinator role.
    pub async fn unenroll(&self, party_id: &str) -> Result<bool, ClientError> {
        let req = UnenrollRequest {
            party_id: party_id.to_string(),
        };
        let r = self
            .call("Directory/Unenroll", || {
                let mut c = self.directory_rpc();
                let req = req.clone();
                async move { c.unenroll(req).await }
            })
            .await?;
        Ok(r.removed)
    }

    /// The enrollments of `party_ids` (every one when empty); ids bound to no key are left
    /// out. Needs the coordinator role.
    pub async fn enrolled<S: AsRef<str>>(
        &self,
        party_ids: &[S],
    ) -> Result<Vec<Enrollment>, ClientError> {
        let req = ListEnrolledRequest {
            party_ids: party_ids.iter().map(|p| p.as_ref().to_string()).collect(),
        };
        let r = self
            .call("Directory/ListEnrolled", || {
                let mut c = self.directory_rpc();
                let req = req.clone();
                async move { c.list_enrolled(req).await }
            })
            .await?;
        Ok(r.enrollments)
    }

    /// The identity key each of `party_ids` is enrolled to, in order; an error names the first
    /// that is not enrolled. Needs the coordinator role.
    pub async fn enrolled_keys<S: AsRef<str>>(
        &self,
        party_ids: &[S],
    ) -> Result<Vec<[u8; 32]>, ClientError> {
        let enrolled = self.enrolled(party_ids).await?;
        party_ids
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let e = enrolled.iter().find(|e| e.party_id == p).ok_or_else(|| {
                    ClientError::InvalidArgument(format!(
                        "party {p:?} is not enrolled on relay {}; enroll it with `cohort enroll --party-id {p} --key <its identity key>`",
                        self.url()
                    ))
                })?;
                e.identity_key.as_slice().try_into().map_err(|_| {
                    ClientError::bad_response(
                        self.url(),
                        "Directory/ListEnrolled",
                        format!("identity_key of {p:?} is not 32 bytes"),
                    )
                })
            })
            .collect()
    }
}
