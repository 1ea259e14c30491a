//! A server stream that survives dropped connections and relay restarts: a background task
//! opens the stream, forwards what arrives, and when the stream ends or breaks it opens it
//! again after a backoff. Only a refusal that retrying cannot fix (a permission or argument
//! error) ends it, and that error is handed to the reader.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::client::{is_transient, Client};
use crate::error::ClientError;

/// How many items wait between the background task and the reader.
const BUFFER: usize = 256;
/// A stream that stayed up this long counts as healthy: the next reconnect starts fast.
const HEALTHY: Duration = Duration::from_secs(5);

pub(crate) struct Resumable<T> {
    rx: mpsc::Receiver<Result<T, ClientError>>,
    task: JoinHandle<()>,
    /// Why the stream ended for good, once it has.
    error: Option<ClientError>,
    what: String,
    url: String,
}

impl<T: Send + 'static> Resumable<T> {
    /// Spawns the task. `open` opens the stream (through [`Client::call`], so it logs in
    /// again when needed); `accept` turns each item into what the reader gets, or `None` to
    /// skip it (a duplicate).
    pub(crate) fn spawn<M, Open, Fut, Accept>(
        client: Client,
        what: String,
        open: Open,
        mut accept: Accept,
    ) -> Self
    where
        M: Send + 'static,
        Open: Fn(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<tonic::Streaming<M>, ClientError>> + Send,
        Accept: FnMut(M) -> Option<T> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(BUFFER);
        let url = client.url().to_string();
        let task_what = what.clone();
        let task = tokio::spawn(async move {
            let options = client.options().clone();
            let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
            loop {
                let opened = tokio::select! {
                    r = open(client.clone()) => r,
                    _ = tx.closed() => return,
                };
                match opened {
                    Ok(mut stream) => {
                        let since = Instant::now();
                        let mut healthy = false;
                        loop {
                            let next = tokio::select! {
                                m = stream.message() => m,
                                _ = tx.closed() => return,
                            };
                            match next {
                                Ok(Some(m)) => {
                                    healthy = true;
                                    if let Some(item) = accept(m) {
                                        if tx.send(Ok(item)).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                Ok(None) => {
                                    tracing::debug!(what = %task_what, relay = %client.url(), "stream ended; reopening");
                                    break;
                                }
                                Err(status) => {
                                    let e = ClientError::rpc(client.url(), "stream", &status);
                                    if !is_transient(&e)
                                        && status.code() != tonic::Code::Unauthenticated
                                    {
                                        let _ = tx.send(Err(e)).await;
                                        return;
                                    }
                                    tracing::debug!(what = %task_what, error = %e, "stream broke; reopening");
                                    break;
                                }
                            }
                        }
                        if healthy || since.elapsed() >= HEALTHY {
                            backoff.reset();
                        }
                    }
                    Err(e) if is_transient(&e) => {
                        tracing::debug!(what = %task_what, error = %e, "cannot open stream yet; retrying");
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Resumable {
            rx,
            task,
            error: None,
            what,
            url,
        }
    }

    fn closed(&self) -> ClientError {
        self.error
            .clone()
            .unwrap_or_else(|| ClientError::StreamClosed {
                url: self.url.clone(),
                what: self.what.clone(),
                reason: "its background task stopped".into(),
            })
    }

    /// The next item, or the error that ended the stream.
    pub(crate) async fn recv(&mut self) -> Result<T, ClientError> {
        if self.error.is_some() {
            return Err(self.closed());
        }
        match self.rx.recv().await {
            Some(Ok(item)) => Ok(item),
            Some(Err(e)) => {
                self.error = Some(e.clone());
                Err(e)
            }
            None => Err(self.closed()),
        }
    }

    /// For `Stream` implementations: `None` once the stream ended ([`Self::error`] says why).
    pub(crate) fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.error.is_some() {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(item))) => Poll::Ready(Some(item)),
            Poll::Ready(Some(Err(e))) => {
                self.error = Some(e);
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.error = Some(self.closed());
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    pub(crate) fn error(&self) -> Option<&ClientError> {
        self.error.as_ref()
    }
}

impl<T> Drop for Resumable<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
