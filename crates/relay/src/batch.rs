//! Acknowledgments, coalesced: every AcknowledgeMessage waiting while the previous batch was
//! being committed goes into the next one, which runs as one rule in one write. Each mailbox's
//! pending count is rewritten once per batch, and the writer runs one closure where it would
//! have run one per ack. Each caller still gets its own answer after the commit is durable.

use std::sync::Arc;

use cohort_core::delivery::{self, Ack, Settled};
use cohort_core::store::{Store, StoreExt};
use cohort_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::service::now_ms;

type Job = (Ack, oneshot::Sender<Result<Settled>>);

/// Most acks in one write.
const MAX_BATCH: usize = 1024;

pub(crate) struct AckBatcher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl AckBatcher {
    /// Starts the batching task on the current runtime.
    pub(crate) fn start(store: Arc<dyn Store>) -> AckBatcher {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        AckBatcher { jobs }
    }

    pub(crate) async fn ack(&self, ack: Ack) -> Result<Settled> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((ack, reply))
            .map_err(|_| Error::unavailable("the relay is shutting down"))?;
        answer
            .await
            .map_err(|_| Error::unavailable("the relay is shutting down"))?
    }
}

/// Ends when every sender (the relay) is gone.
async fn run(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (acks, replies): (Vec<Ack>, Vec<_>) = std::mem::take(&mut jobs).into_iter().unzip();
        let answered = store
            .write(move |tx| delivery::acknowledge_batch(tx, &acks, now_ms()))
            .await;
        match answered {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
