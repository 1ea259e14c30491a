//! `cohort.v1.Mailbox`: one bidirectional stream per connection, translated frame by frame
//! into calls on the relay's streaming engine ([`cohort_relay::stream`]); what the engine
//! pushes (deliveries, answers, ended subscriptions) is encoded back.

use std::pin::Pin;
use std::sync::Arc;

use cohort_core::mailbox;
use cohort_core::Error;
use cohort_relay::stream::{MailboxStream, Pushed, SendRequest, Subscribe};
use cohort_relay::Relay;
use cohort_wire::cohort::client_frame::Frame;
use cohort_wire::cohort::mailbox_server::Mailbox;
use cohort_wire::cohort::{
    server_frame, AckFailure, AckResult, ClientFrame, Delivery, Failure, FrameError, SendOutcome,
    SendResult, ServerFrame, StreamMessage, SubscriptionEnded,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{admit, principal, status};
use cohort_relay::Action;

const METHOD: &str = "/cohort.v1.Mailbox/Open";
/// Frames waiting to be written to the client.
const OUTBOUND: usize = 64;

pub struct MailboxService {
    pub relay: Arc<Relay>,
}

type Push = Pin<Box<dyn Stream<Item = Result<ServerFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Mailbox for MailboxService {
    type OpenStream = Push;

    async fn open(
        &self,
        req: Request<Streaming<ClientFrame>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let who = principal(&self.relay, &req).await?;
        admit(&self.relay, &req, Action::OpenStream, Some(&who))?;
        let stream = MailboxStream::open(&self.relay, who);
        let (tx, rx) = mpsc::channel(OUTBOUND);
        tokio::spawn(serve(self.relay.clone(), stream, req.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Reads frames and pushes what the engine has, until the client goes away or the relay
/// shuts down. A client that closes its side still gets answers and deliveries.
async fn serve(
    relay: Arc<Relay>,
    mut stream: MailboxStream,
    mut inbound: Streaming<ClientFrame>,
    tx: mpsc::Sender<Result<ServerFrame, Status>>,
) {
    let mut reading = true;
    loop {
        let answer = tokio::select! {
            frame = inbound.message(), if reading => match frame {
                Ok(Some(frame)) => apply(&relay, &mut stream, frame).await,
                Ok(None) => {
                    reading = false;
                    None
                }
                // The client reset the stream or the connection broke.
                Err(_) => return,
            },
            pushed = stream.next() => match pushed {
                Ok(pushed) => Some(encode(&relay, stream.principal().id.as_str(), pushed)),
                Err(e) => {
                    let _ = tx.send(Err(status(e))).await;
                    return;
                }
            },
            _ = tx.closed() => return,
        };
        if let Some(frame) = answer {
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    }
}

/// Hands one frame to the engine; returns an answer when the frame is refused at once.
async fn apply(
    relay: &Relay,
    stream: &mut MailboxStream,
    frame: ClientFrame,
) -> Option<ServerFrame> {
    let party = stream.principal().id.clone();
    let refused = |what: &str, request_id: u64, e: Error| {
        Some(frame_error(relay, &party, what, request_id, e))
    };
    match frame.frame {
        None => refused(
            "frame",
            0,
            Error::invalid(
                "empty frame: set one of subscribe, unsubscribe, credit, send, ack, ack_ids",
            ),
        ),
        Some(Frame::Subscribe(s)) => {
            let (session_id, subscription_id) = (s.session_id.clone(), s.subscription_id);
            let r = stream
                .subscribe(Subscribe {
                    session_id: s.session_id,
                    party_id: s.party_id,
                    after_seq: s.after_seq,
                    credit: s.credit,
                    subscription_id: s.subscription_id,
                })
                .await;
            r.err().map(|e| {
                refusal(relay, &party, "subscribe", &e);
                ServerFrame {
                    frame: Some(server_frame::Frame::Ended(SubscriptionEnded {
                        session_id,
                        subscription_id,
                        failure: Some(failure(e)),
                    })),
                }
            })
        }
        Some(Frame::Unsubscribe(u)) => {
            stream.unsubscribe(&u.session_id);
            None
        }
        Some(Frame::Credit(c)) => match stream.grant(&c.session_id, c.n) {
            Ok(()) => None,
            Err(e) => refused("credit", 0, e),
        },
        Some(Frame::Send(batch)) => {
            let items = batch
                .items
                .into_iter()
                .map(|i| SendRequest {
                    client_id: i.client_id,
                    session_id: i.session_id,
                    to_parties: i.to_parties,
                    round: i.round,
                    message_type: i.message_type,
                    payload: i.payload.into(),
                })
                .collect();
            match stream.send_batch(batch.request_id, items).await {
                Ok(()) => None,
                Err(e) => refused("send", batch.request_id, e),
            }
        }
        Some(Frame::Ack(a)) => match stream
            .ack_up_to(a.request_id, a.session_id, a.up_to_seq)
            .await
        {
            Ok(()) => None,
            Err(e) => refused("ack", a.request_id, e),
        },
        Some(Frame::AckIds(a)) => match stream.ack_ids(a.request_id, a.message_ids).await {
            Ok(()) => None,
            Err(e) => refused("ack_ids", a.request_id, e),
        },
    }
}

fn refusal(relay: &Relay, party: &str, what: &str, e: &Error) {
    let code = status(e.clone()).code();
    relay.refused(
        &format!("{METHOD} {what}"),
        Some(party),
        &format!("{code:?}"),
        &e.message,
    );
}

fn frame_error(relay: &Relay, party: &str, what: &str, request_id: u64, e: Error) -> ServerFrame {
    refusal(relay, party, what, &e);
    ServerFrame {
        frame: Some(server_frame::Frame::Error(FrameError {
            request_id,
            failure: Some(failure(e)),
        })),
    }
}

/// The core's error as a frame field: the gRPC code `status()` maps it to, its message, and
/// the culprit.
fn failure(e: Error) -> Failure {
    let culprit = e.culprit.clone().unwrap_or_default();
    let st = status(e);
    Failure {
        code: st.code() as i32,
        message: st.message().to_string(),
        culprit,
    }
}

fn encode(relay: &Relay, party: &str, pushed: Pushed) -> ServerFrame {
    let frame = match pushed {
        Pushed::Delivery {
            session_id,
            subscription_id,
            messages,
        } => server_frame::Frame::Delivery(Delivery {
            session_id,
            subscription_id,
            messages: messages
                .iter()
                .map(|d| StreamMessage {
                    seq: d.seq,
                    message_id: mailbox::message_id_string(&d.message.id),
                    from_party: d.message.sender.clone(),
                    is_broadcast: d.message.is_broadcast,
                    round: d.message.round,
                    message_type: d.message.message_type.clone(),
                    payload: d.message.payload.to_vec(),
                    created_at: d.message.created_at,
                })
                .collect(),
        }),
        Pushed::Ended {
            session_id,
            subscription_id,
            error,
        } => server_frame::Frame::Ended(SubscriptionEnded {
            session_id,
            subscription_id,
            failure: Some(failure(error)),
        }),
        Pushed::Sent {
            request_id,
            outcomes,
        } => server_frame::Frame::SendResult(SendResult {
            request_id,
            outcomes: outcomes
                .into_iter()
                .map(|o| match o.result {
                    Ok(a) => SendOutcome {
                        client_id: o.client_id,
                        message_id: a.message_id,
                        duplicate: a.duplicate,
                        failure: None,
                    },
                    Err(e) => {
                        refusal(relay, party, "send", &e);
                        SendOutcome {
                            client_id: o.client_id,
                            message_id: String::new(),
                            duplicate: false,
                            failure: Some(failure(e)),
                        }
                    }
                })
                .collect(),
        }),
        Pushed::Acked { request_id, result } => match result {
            Ok(acked) => server_frame::Frame::AckResult(AckResult {
                request_id,
                settled: acked.settled,
                failures: acked
                    .failures
                    .into_iter()
                    .map(|(message_id, e)| {
                        refusal(relay, party, "ack_ids", &e);
                        AckFailure {
                            message_id,
                            failure: Some(failure(e)),
                        }
                    })
                    .collect(),
            }),
            Err(e) => {
                return frame_error(relay, party, "ack", request_id, e);
            }
        },
    };
    ServerFrame { frame: Some(frame) }
}
