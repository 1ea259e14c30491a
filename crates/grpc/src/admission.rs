//! What every request must pass before a service sees it: a gRPC content type (else HTTP 415,
//! as the gRPC spec asks), the per-address call rate ([`Relay::admit`]), and, for methods
//! whose request is a single message, exactly one message (tonic would take the first and
//! silently drop the rest). It also holds a call to the client's `grpc-timeout`. Refusals
//! are gRPC statuses, so the access layer above logs and counts them like any other.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use cohort_relay::{Action, Relay};
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tonic::transport::server::TcpConnectInfo;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

/// The paths (`/package.Service/Method`) of the methods that take one request message, read
/// from the descriptors of every service served, so a method added later is covered.
pub(crate) fn single_message_methods(descriptor_sets: &[&[u8]]) -> HashSet<String> {
    let mut out = HashSet::new();
    for raw in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*raw) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = service.name.unwrap_or_default();
                for method in service.method {
                    if !method.client_streaming.unwrap_or(false) {
                        let full = if package.is_empty() {
                            name.clone()
                        } else {
                            format!("{package}.{name}")
                        };
                        out.insert(format!("/{full}/{}", method.name.unwrap_or_default()));
                    }
                }
            }
        }
    }
    out
}

#[derive(Clone)]
pub(crate) struct AdmissionLayer {
    pub(crate) relay: Arc<Relay>,
    pub(crate) single_message: Arc<HashSet<String>>,
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn refuse(status: Status) -> http::Response<tonic::body::Body> {
    status.into_http()
}

impl<S, B> Service<http::Request<B>> for Admission<S>
where
    S: Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
    >,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/grpc") {
            let status = Status::invalid_argument(format!(
                "content-type {} is not gRPC; send application/grpc",
                cohort_core::validate::quoted(content_type)
            ));
            let mut resp = refuse(status);
            *resp.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Box::pin(async move { Ok(resp) });
        }
        let peer = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .map(|a| a.ip());
        if let Err(e) = self.layer.relay.admit(Action::Call, None, peer) {
            let resp = refuse(crate::status(e));
            return Box::pin(async move { Ok(resp) });
        }
        let single = self.layer.single_message.contains(req.uri().path());
        let req = req.map(|body| {
            if single {
                tonic::body::Body::new(OneMessage::new(body))
            } else {
                tonic::body::Body::new(body)
            }
        });
        let deadline = grpc_timeout(req.headers());
        let fut = self.inner.call(req);
        match deadline {
            None => Box::pin(fut),
            // The client's deadline (what tonic's own server did): a call still running then
            // is dropped, and the client, which has given up, gets DEADLINE_EXCEEDED.
            Some(deadline) => Box::pin(async move {
                match tokio::time::timeout(deadline, fut).await {
                    Ok(answer) => answer,
                    Err(_) => Ok(refuse(Status::deadline_exceeded(
                        "the call's grpc-timeout passed before it finished",
                    ))),
                }
            }),
        }
    }
}

/// The `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

pin_project_lite::pin_project! {
    /// A request body that must hold exactly one gRPC message: data past the end of the first
    /// fails the body with INVALID_ARGUMENT, which tonic answers before the handler runs.
    struct OneMessage<B> {
        #[pin]
        inner: B,
        // Bytes of the current message's 5-byte prefix seen so far, and the prefix.
        header: [u8; 5],
        header_len: usize,
        // Payload bytes of the current message still to come.
        remaining: usize,
        messages: usize,
    }
}

impl<B> OneMessage<B> {
    fn new(inner: B) -> Self {
        OneMessage {
            inner,
            header: [0; 5],
            header_len: 0,
            remaining: 0,
            messages: 0,
        }
    }
}

impl<B> Body for OneMessage<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = match this.inner.poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(Status::from_error(e.into()))))
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let mut rest = data.clone();
            while rest.has_remaining() {
                if *this.remaining > 0 {
                    let n = (*this.remaining).min(rest.remaining());
                    rest.advance(n);
                    *this.remaining -= n;
                    if *this.remaining == 0 {
                        *this.messages += 1;
                    }
                    continue;
                }
                if *this.messages >= 1 {
                    return Poll::Ready(Some(Err(Status::invalid_argument(
                        "this method takes one request message; the call carried more",
                    ))));
                }
                this.header[*this.header_len] = rest.get_u8();
                *this.header_len += 1;
                if *this.header_len == 5 {
                    *this.header_len = 0;
                    let h = *this.header;
                    *this.remaining = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
                    if *this.remaining == 0 {
                        *this.messages += 1;
                    }
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header_is_read_in_every_unit_and_garbage_is_ignored() {
        let t = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "123456789m", "10x", "-1S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }
}
