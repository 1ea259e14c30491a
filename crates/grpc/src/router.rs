//! `mpc.router.v1.MessageRouter`, wire-compatible with the MPC router's API.

use std::pin::Pin;
use std::sync::Arc;

use cohort_core::identity::NotificationChannel as CoreNotification;
use cohort_core::mailbox::{self, Delivery};
use cohort_core::session::{
    DelegateShare as CoreDelegateShare, DeviceInfo as CoreDevice, Report, RouteRequest, Session,
    SessionEvent as CoreEvent,
};
use cohort_relay::{EventFeed, MessageFeed};
use cohort_wire::router::message_router_server::MessageRouter;
use cohort_wire::router::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{admit, principal, status};
use cohort_relay::{now_ms, Action, Relay};

pub struct RouterService {
    pub relay: Arc<Relay>,
}

type Push<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn to_wire(d: &Delivery) -> MpcMessage {
    MpcMessage {
        message_id: mailbox::message_id_string(&d.message.id),
        session_id: d.message.session_id.clone(),
        from_party: d.message.sender.clone(),
        is_broadcast: d.message.is_broadcast,
        round_number: d.message.round,
        message_type: d.message.message_type.clone(),
        payload: d.message.payload.to_vec(),
        created_at: d.message.created_at,
    }
}

fn notification_to_wire(n: &Option<CoreNotification>) -> Option<NotificationChannel> {
    n.as_ref().map(|n| NotificationChannel {
        email: n.email.clone(),
        phone: n.phone.clone(),
        push_token: n.push_token.clone(),
    })
}

fn event_to_wire(e: CoreEvent) -> SessionEvent {
    SessionEvent {
        event_id: e.event_id,
        event_type: e.event_type,
        session_id: e.session_id,
        threshold_n: e.n,
        threshold_t: e.t,
        selected_parties: e.selected_parties,
        join_tokens: e.join_tokens.into_iter().collect(),
        message_hash: e.message_hash,
        created_at: e.created_at,
        expires_at: e.expires_at,
        delegate_user_share: e.delegate_share.map(|d| DelegateUserShare {
            delegate_party_id: d.party_id,
            encrypted_share: d.encrypted_share,
            party_index: d.party_index,
        }),
    }
}

fn party_infos(s: &Session) -> Vec<PartyInfo> {
    s.participants
        .iter()
        .map(|p| PartyInfo {
            party_id: p.party_id.clone(),
            party_index: i32::from(p.index),
            device_info: p.device.as_ref().map(|d| DeviceInfo {
                device_type: d.device_type.clone(),
                device_id: d.device_id.clone(),
                platform: d.platform.clone(),
                app_version: d.app_version.clone(),
            }),
        })
        .collect()
}

/// A feed as a response stream, polled by the connection itself: no task and no channel per
/// stream (both cost memory per subscriber and a wakeup per message). The feed's end (a
/// closed session, shutdown) reaches the client as the stream's status; a client that goes
/// away drops the stream, and with it the feed and its subscription.
fn stream_of<F, I, T, Fut>(
    feed: F,
    next: fn(F) -> Fut,
    encode: fn(I) -> T,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static
where
    F: Send + 'static,
    I: Send + 'static,
    T: Send + 'static,
    Fut: std::future::Future<Output = (F, cohort_core::Result<Vec<I>>)> + Send + 'static,
{
    let start = (Some(feed), std::collections::VecDeque::<I>::new());
    futures_util::stream::unfold(start, move |(mut feed, mut queued)| async move {
        loop {
            if let Some(item) = queued.pop_front() {
                return Some((Ok(encode(item)), (feed, queued)));
            }
            let (f, batch) = next(feed?).await;
            match batch {
                Ok(batch) => {
                    queued.extend(batch);
                    feed = Some(f);
                }
                // Ends the stream after this item: the feed is not put back.
                Err(e) => return Some((Err(status(e)), (None, queued))),
            }
        }
    })
}

async fn next_messages(mut feed: MessageFeed) -> (MessageFeed, cohort_core::Result<Vec<Delivery>>) {
    let batch = feed.next().await;
    (feed, batch)
}

async fn next_events(mut feed: EventFeed) -> (EventFeed, cohort_core::Result<Vec<CoreEvent>>) {
    let batch = feed.next().await;
    (feed, batch)
}

#[tonic::async_trait]
impl MessageRouter for RouterService {
    async fn route_message(
        &self,
        req: Request<RouteMessageRequest>,
    ) -> Result<Response<RouteMessageResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        admit(&self.relay, &req, Action::Route, Some(&who))?;
        let r = req.into_inner();
        let route = RouteRequest {
            session_id: r.session_id,
            from_party: r.from_party,
            to_parties: r.to_parties,
            round: r.round_number,
            message_type: r.message_type,
            payload: r.payload.into(),
        };
        let id = self.relay.route(who, route).await.map_err(status)?;
        Ok(Response::new(RouteMessageResponse {
            success: true,
            message_id: id,
        }))
    }

    type SubscribeMessagesStream = Push<MpcMessage>;

    async fn subscribe_messages(
        &self,
        req: Request<SubscribeMessagesRequest>,
    ) -> Result<Response<Self::SubscribeMessagesStream>, Status> {
        let who = principal(&self.relay, &req).await?;
        admit(&self.relay, &req, Action::OpenStream, Some(&who))?;
        let r = req.into_inner();
        let feed = MessageFeed::open(&self.relay, who, r.session_id, r.party_id)
            .await
            .map_err(status)?;
        Ok(Response::new(Box::pin(stream_of(
            feed,
            next_messages,
            |d| to_wire(&d),
        ))))
    }

    async fn get_pending_messages(
        &self,
        req: Request<GetPendingMessagesRequest>,
    ) -> Result<Response<GetPendingMessagesResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let pending = self
            .relay
            .pending_after(who, r.session_id, r.party_id, r.after_timestamp)
            .await
            .map_err(status)?;
        Ok(Response::new(GetPendingMessagesResponse {
            messages: pending.iter().map(to_wire).collect(),
        }))
    }

    async fn acknowledge_message(
        &self,
        req: Request<AcknowledgeMessageRequest>,
    ) -> Result<Response<AcknowledgeMessageResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let st = self
            .relay
            .acknowledge(
                who,
                r.message_id,
                r.party_id,
                r.session_id,
                r.success,
                r.error_message,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(AcknowledgeMessageResponse {
            success: true,
            message: st.as_str().into(),
        }))
    }

    async fn get_message_status(
        &self,
        req: Request<GetMessageStatusRequest>,
    ) -> Result<Response<GetMessageStatusResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let (msg, recipients) = self
            .relay
            .message_status(who, r.message_id, r.session_id)
            .await
            .map_err(status)?;
        let all_acknowledged = recipients
            .iter()
            .all(|r| r.entry.status == mailbox::DeliveryStatus::Acknowledged);
        Ok(Response::new(GetMessageStatusResponse {
            message_id: mailbox::message_id_string(&msg.id),
            session_id: msg.session_id,
            deliveries: recipients
                .into_iter()
                .map(|r| MessageDeliveryStatus {
                    party_id: r.party_id,
                    status: r.entry.status.as_str().into(),
                    delivered_at: r.entry.delivered_at,
                    acknowledged_at: r.entry.acknowledged_at,
                    retry_count: i32::try_from(r.entry.retry_count).unwrap_or(i32::MAX),
                })
                .collect(),
            all_acknowledged,
        }))
    }

    async fn register_party(
        &self,
        req: Request<RegisterPartyRequest>,
    ) -> Result<Response<RegisterPartyResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let notification = r.notification.map(|n| CoreNotification {
            email: n.email,
            phone: n.phone,
            push_token: n.push_token,
        });
        let p = self
            .relay
            .register(who, r.party_id, r.party_role, r.version, notification)
            .await
            .map_err(status)?;
        let mode = if p.offline_mode() {
            "offline mode (24 h)"
        } else {
            "real-time mode"
        };
        Ok(Response::new(RegisterPartyResponse {
            success: true,
            message: format!("registered {} as {} in {mode}", p.id, p.role),
            registered_at: p.registered_at,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let pending = self
            .relay
            .heartbeat(who, r.party_id)
            .await
            .map_err(status)?;
        Ok(Response::new(HeartbeatResponse {
            success: true,
            server_timestamp: now_ms(),
            pending_messages: i32::try_from(pending).unwrap_or(i32::MAX),
        }))
    }

    type SubscribeSessionEventsStream = Push<SessionEvent>;

    async fn subscribe_session_events(
        &self,
        req: Request<SubscribeSessionEventsRequest>,
    ) -> Result<Response<Self::SubscribeSessionEventsStream>, Status> {
        let who = principal(&self.relay, &req).await?;
        admit(&self.relay, &req, Action::OpenStream, Some(&who))?;
        let r = req.into_inner();
        let feed =
            EventFeed::open(&self.relay, &who, &r.party_id, r.event_types).map_err(status)?;
        Ok(Response::new(Box::pin(stream_of(
            feed,
            next_events,
            event_to_wire,
        ))))
    }

    async fn publish_session_event(
        &self,
        req: Request<PublishSessionEventRequest>,
    ) -> Result<Response<PublishSessionEventResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let e = req
            .into_inner()
            .event
            .ok_or_else(|| Status::invalid_argument("event is missing"))?;
        let max = usize::from(self.relay.limits().max_session_parties);
        if e.join_tokens.len() > max {
            return Err(Status::invalid_argument(format!(
                "event.join_tokens has {} entries (limit {max})",
                e.join_tokens.len()
            )));
        }
        let event = CoreEvent {
            event_id: if e.event_id.is_empty() {
                uuid_string()
            } else {
                e.event_id
            },
            event_type: e.event_type,
            session_id: e.session_id,
            n: e.threshold_n,
            t: e.threshold_t,
            selected_parties: e.selected_parties,
            join_tokens: e.join_tokens.into_iter().collect(),
            message_hash: e.message_hash,
            created_at: if e.created_at == 0 {
                now_ms()
            } else {
                e.created_at
            },
            expires_at: e.expires_at,
            delegate_share: e.delegate_user_share.map(|d| CoreDelegateShare {
                party_id: d.delegate_party_id,
                encrypted_share: d.encrypted_share,
                public_key: Vec::new(),
                party_index: d.party_index,
            }),
        };
        let count = self.relay.publish_event(who, event).await.map_err(status)?;
        Ok(Response::new(PublishSessionEventResponse {
            success: true,
            subscriber_count: i32::try_from(count).unwrap_or(i32::MAX),
        }))
    }

    async fn get_registered_parties(
        &self,
        req: Request<GetRegisteredPartiesRequest>,
    ) -> Result<Response<GetRegisteredPartiesResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let parties = self
            .relay
            .parties(&who, r.role_filter, r.only_online)
            .await
            .map_err(status)?;
        let parties: Vec<RegisteredParty> = parties
            .into_iter()
            .map(|v| RegisteredParty {
                notification: notification_to_wire(&v.party.notification),
                party_id: v.party.id,
                role: v.party.role,
                online: v.online,
                registered_at: v.party.registered_at,
                last_seen_at: v.party.last_seen_at,
            })
            .collect();
        let total_count = i32::try_from(parties.len()).unwrap_or(i32::MAX);
        Ok(Response::new(GetRegisteredPartiesResponse {
            parties,
            total_count,
        }))
    }

    async fn join_session(
        &self,
        req: Request<JoinSessionRequest>,
    ) -> Result<Response<JoinSessionResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let device = r.device_info.map(|d| CoreDevice {
            device_type: d.device_type,
            device_id: d.device_id,
            platform: d.platform,
            app_version: d.app_version,
        });
        let party_id = r.party_id.clone();
        let s = self
            .relay
            .join(who, r.session_id, r.party_id, r.join_token, device)
            .await
            .map_err(status)?;
        let party_index = s
            .participant(&party_id)
            .map(|p| i32::from(p.index))
            .unwrap_or(0);
        Ok(Response::new(JoinSessionResponse {
            success: true,
            other_parties: party_infos(&s),
            party_index,
            session_info: Some(SessionInfo {
                session_id: s.id.clone(),
                session_type: s.session_type.clone(),
                threshold_n: i32::from(s.n),
                threshold_t: i32::from(s.t),
                message_hash: s.message_hash.clone(),
                status: s.status.as_str().into(),
            }),
        }))
    }

    async fn mark_party_ready(
        &self,
        req: Request<MarkPartyReadyRequest>,
    ) -> Result<Response<MarkPartyReadyResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let all_ready = self
            .relay
            .mark_ready(who, r.session_id, r.party_id)
            .await
            .map_err(status)?;
        Ok(Response::new(MarkPartyReadyResponse {
            success: true,
            all_ready,
        }))
    }

    async fn report_completion(
        &self,
        req: Request<ReportCompletionRequest>,
    ) -> Result<Response<ReportCompletionResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let report = Report {
            public_key: r.public_key,
            signature: r.signature,
        };
        let all_completed = self
            .relay
            .report_completion(who, r.session_id, r.party_id, report)
            .await
            .map_err(status)?;
        Ok(Response::new(ReportCompletionResponse {
            success: true,
            all_completed,
        }))
    }

    async fn get_session_status(
        &self,
        req: Request<GetSessionStatusRequest>,
    ) -> Result<Response<GetSessionStatusResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let s = self
            .relay
            .session_status(who, req.into_inner().session_id)
            .await
            .map_err(status)?;
        Ok(Response::new(GetSessionStatusResponse {
            session_id: s.id.clone(),
            status: s.status.as_str().into(),
            threshold_n: i32::from(s.n),
            threshold_t: i32::from(s.t),
            participants: party_infos(&s),
        }))
    }

    async fn submit_delegate_share(
        &self,
        req: Request<SubmitDelegateShareRequest>,
    ) -> Result<Response<SubmitDelegateShareResponse>, Status> {
        let who = principal(&self.relay, &req).await?;
        let r = req.into_inner();
        let share = CoreDelegateShare {
            party_id: r.party_id,
            encrypted_share: r.encrypted_share,
            public_key: r.public_key,
            party_index: r.party_index,
        };
        self.relay
            .submit_delegate_share(who, r.session_id, share)
            .await
            .map_err(status)?;
        Ok(Response::new(SubmitDelegateShareResponse { success: true }))
    }
}

fn uuid_string() -> String {
    mailbox::message_id_string(&mailbox::new_message_id(now_ms()))
}
