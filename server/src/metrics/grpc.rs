//! go-grpc-prometheus' server metrics, which etcd exports: calls started and handled (by
//! status code), messages received and sent, and with `--metrics=extensive` the handling time.
//!
//! A tower layer around the client-facing router: it sees each gRPC call's path, counts the
//! length-prefixed messages in the request and response bodies, and takes the status code
//! from the response headers (a failed call answers with headers only) or from the trailers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, Registry};
use tower::{Layer, Service};

use super::{counter_vec, histogram_vec, Built, MetricsLevel};

pub struct GrpcMetrics {
    started: IntCounterVec,
    handled: IntCounterVec,
    msg_received: IntCounterVec,
    msg_sent: IntCounterVec,
    handling: Option<HistogramVec>,
}

const CALL_LABELS: &[&str] = &["grpc_type", "grpc_service", "grpc_method"];

impl GrpcMetrics {
    pub(super) fn new(r: &Registry, level: MetricsLevel) -> Built<GrpcMetrics> {
        let handled_labels = ["grpc_type", "grpc_service", "grpc_method", "grpc_code"];
        let handling = match level {
            MetricsLevel::Basic => None,
            // prometheus.DefBuckets, as go-grpc-prometheus uses.
            MetricsLevel::Extensive => Some(histogram_vec(
                r,
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                CALL_LABELS,
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            )?),
        };
        Ok(GrpcMetrics {
            started: counter_vec(
                r,
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                CALL_LABELS,
            )?,
            handled: counter_vec(
                r,
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                &handled_labels,
            )?,
            msg_received: counter_vec(
                r,
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                CALL_LABELS,
            )?,
            msg_sent: counter_vec(
                r,
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                CALL_LABELS,
            )?,
            handling,
        })
    }
}

/// The streaming kind of each method of the etcd API (go-grpc-prometheus' `grpc_type`).
fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("grpc.health.v1.Health", "Watch") => "server_stream",
        _ => "unary",
    }
}

/// grpc-go's `codes.Code.String()`.
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "Canceled",
        b"3" => "InvalidArgument",
        b"4" => "DeadlineExceeded",
        b"5" => "NotFound",
        b"6" => "AlreadyExists",
        b"7" => "PermissionDenied",
        b"8" => "ResourceExhausted",
        b"9" => "FailedPrecondition",
        b"10" => "Aborted",
        b"11" => "OutOfRange",
        b"12" => "Unimplemented",
        b"13" => "Internal",
        b"14" => "Unavailable",
        b"15" => "DataLoss",
        b"16" => "Unauthenticated",
        _ => "Unknown",
    }
}

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<super::Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<super::Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = Instrumented<S>;

    fn layer(&self, inner: S) -> Instrumented<S> {
        Instrumented { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct Instrumented<S> {
    inner: S,
    metrics: Arc<super::Metrics>,
}

/// One call's labels and counters, shared by its request and response bodies.
struct Call {
    metrics: Arc<super::Metrics>,
    labels: [String; 3],
    started: Instant,
    sent: IntCounter,
}

impl Call {
    fn finish(&self, code: &'static str) {
        let [kind, service, method] = &self.labels;
        let g = &self.metrics.grpc;
        g.handled.with_label_values(&[kind.as_str(), service.as_str(), method.as_str(), code]).inc();
        if let Some(h) = &g.handling {
            h.with_label_values(&[kind.as_str(), service.as_str(), method.as_str()])
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Instrumented<S>
where
    S: Service<http::Request<axum::body::Body>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<axum::BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = http::Response<axum::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path().trim_start_matches('/');
        let call = match (is_grpc(&req), path.split_once('/')) {
            (true, Some((service, method))) => {
                let kind = grpc_type(service, method);
                let labels = [kind.to_string(), service.to_string(), method.to_string()];
                let g = &self.metrics.grpc;
                let label_refs = [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()];
                g.started.with_label_values(&label_refs).inc();
                let received = g.msg_received.with_label_values(&label_refs);
                let sent = g.msg_sent.with_label_values(&label_refs);
                Some((
                    Arc::new(Call { metrics: self.metrics.clone(), labels, started: Instant::now(), sent }),
                    received,
                ))
            }
            _ => None,
        };
        let Some((call, received)) = call else {
            let fut = self.inner.call(req.map(axum::body::Body::new));
            return Box::pin(async move { Ok(fut.await?.map(axum::body::Body::new)) });
        };
        let req = req.map(|b| axum::body::Body::new(Counted::new(b, received, None)));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // A call that fails before any message answers with its status in the headers.
            let code = resp.headers().get("grpc-status").map(|c| code_name(c.as_bytes()));
            if let Some(code) = code {
                call.finish(code);
            }
            let sent = call.sent.clone();
            let tracked = if code.is_some() { None } else { Some(Finisher { call, done: false }) };
            Ok(resp.map(|b| axum::body::Body::new(Counted::new(b, sent, tracked))))
        })
    }
}

/// Reports a call's code once: from the trailers, or "Canceled" if the client went away
/// before the response ended (as grpc-go reports a cancelled stream).
struct Finisher {
    call: Arc<Call>,
    done: bool,
}

impl Finisher {
    fn finish(&mut self, code: &'static str) {
        if !self.done {
            self.done = true;
            self.call.finish(code);
        }
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        self.finish("Canceled");
    }
}

/// Counts gRPC messages in a body: each is a 5-byte header (flag, u32 length) then the payload.
struct Counted<B> {
    inner: Pin<Box<B>>,
    messages: IntCounter,
    header: [u8; 5],
    header_len: usize,
    payload_left: u64,
    finisher: Option<Finisher>,
}

impl<B> Counted<B> {
    fn new(inner: B, messages: IntCounter, finisher: Option<Finisher>) -> Self {
        Self { inner: Box::pin(inner), messages, header: [0; 5], header_len: 0, payload_left: 0, finisher }
    }

    fn count(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let skip = data.len().min(self.payload_left as usize);
                self.payload_left -= skip as u64;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            data = &data[take..];
            if self.header_len == 5 {
                self.header_len = 0;
                let [_, a, b, c, d] = self.header;
                self.payload_left = u32::from_be_bytes([a, b, c, d]) as u64;
                self.messages.inc();
            }
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.count(&data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers.get("grpc-status").map_or("Unknown", |c| code_name(c.as_bytes()));
                    if let Some(f) = self.finisher.as_mut() {
                        f.finish(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(f) = self.finisher.as_mut() {
                    f.finish("Unknown");
                }
            }
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
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
    fn counts_messages_split_across_frames() {
        let c = IntCounter::new("m", "m").unwrap_or_else(|e| panic!("{e}"));
        let mut counted = Counted::new(http_body_empty(), c.clone(), None);
        let mut wire = Vec::new();
        for len in [0u32, 3, 70_000] {
            wire.push(0);
            wire.extend_from_slice(&len.to_be_bytes());
            wire.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for chunk in wire.chunks(4) {
            counted.count(chunk);
        }
        assert_eq!(c.get(), 3);
        assert_eq!((counted.header_len, counted.payload_left), (0, 0));
    }

    fn http_body_empty() -> axum::body::Body {
        axum::body::Body::empty()
    }

    #[test]
    fn stream_kinds_and_codes() {
        assert_eq!(grpc_type("etcdserverpb.Watch", "Watch"), "bidi_stream");
        assert_eq!(grpc_type("etcdserverpb.Maintenance", "Snapshot"), "server_stream");
        assert_eq!(grpc_type("etcdserverpb.KV", "Range"), "unary");
        assert_eq!(code_name(b"14"), "Unavailable");
        assert_eq!(code_name(b"99"), "Unknown");
    }
}
