//! One layer around every call: the access log (at debug), the refusal log and counters (at
//! info, through [`Relay::refused`]), and the one place a transport-level status is put into
//! the form the API promises (an oversize request is RESOURCE_EXHAUSTED, naming the limit).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use cohort_relay::Relay;
use tower_layer::Layer;
use tower_service::Service;

tokio::task_local! {
    /// The party id of the call being served, once its token resolved.
    static CALLER: Mutex<Option<String>>;
}

/// Called by [`crate::principal`]: who this call is from, for the logs.
pub(crate) fn record_caller(id: &str) {
    let _ = CALLER.try_with(|c| {
        if let Ok(mut c) = c.lock() {
            *c = Some(id.to_string());
        }
    });
}

#[derive(Clone)]
pub(crate) struct AccessLayer {
    pub(crate) relay: Arc<Relay>,
    /// The largest request message accepted, named in the oversize refusal.
    pub(crate) max_message_bytes: usize,
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;
    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Access<S> {
    inner: S,
    layer: AccessLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Access<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let fut = self.inner.call(req);
        let layer = self.layer.clone();
        Box::pin(CALLER.scope(Mutex::new(None), async move {
            let started = Instant::now();
            let mut resp = fut.await?;
            let caller = CALLER
                .try_with(|c| c.lock().ok().and_then(|mut c| c.take()))
                .ok()
                .flatten();
            let mut code = tonic::Code::Ok;
            if let Some(status) = tonic::Status::from_header_map(resp.headers()) {
                let mut status = status;
                if status.code() == tonic::Code::OutOfRange
                    && status.message().contains("message length too large")
                {
                    // gRPC's table: "larger than configured limit" is RESOURCE_EXHAUSTED.
                    status = tonic::Status::resource_exhausted(format!(
                        "request is larger than this relay accepts ({} bytes; max_payload_bytes plus 64 KiB)",
                        layer.max_message_bytes
                    ));
                    let headers = resp.headers_mut();
                    headers.remove("grpc-status");
                    headers.remove("grpc-message");
                    let _ = status.add_header(headers);
                }
                code = status.code();
                if code != tonic::Code::Ok {
                    layer.relay.refused(
                        &method,
                        caller.as_deref(),
                        &format!("{code:?}"),
                        status.message(),
                    );
                }
            }
            tracing::debug!(
                target: "cohort::access",
                method,
                party = caller.as_deref().unwrap_or("-"),
                code = ?code,
                micros = started.elapsed().as_micros() as u64,
                "call"
            );
            Ok(resp)
        }))
    }
}
