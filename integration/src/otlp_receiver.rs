//! An OTLP receiver of the tests' own on loopback: takes traces over gRPC, HTTP with protobuf
//! and HTTP with JSON, decodes them and keeps every span with its resource's service name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// One span as received.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex id of its parent (empty for a root).
    pub parent_span_id: String,
    /// Its name.
    pub name: String,
    /// Its attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// Its resource's `service.name`.
    pub service: String,
    /// `1` OK, `2` error, `0` unset.
    pub status_code: i32,
    /// How it came: `grpc`, `http/protobuf` or `http/json`.
    pub transport: &'static str,
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

/// A running receiver.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:PORT` of the gRPC service.
    pub grpc_endpoint: String,
    /// `http://127.0.0.1:PORT` of the HTTP service (it serves `/v1/traces`).
    pub http_endpoint: String,
    spans: Spans,
}

fn text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn keep(spans: &Spans, request: ExportTraceServiceRequest, transport: &'static str) {
    let mut out = spans.lock().unwrap();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|a| a.key == "service.name")
            .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    name: s.name,
                    attributes: s
                        .attributes
                        .iter()
                        .map(|a| {
                            (
                                a.key.clone(),
                                text(a.value.as_ref().and_then(|v| v.value.as_ref())),
                            )
                        })
                        .collect(),
                    service: service.clone(),
                    status_code: s.status.map_or(0, |st| st.code),
                    transport,
                });
            }
        }
    }
}

struct Grpc(Spans);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    /// Starts both services on loopback ports of their own.
    pub fn start() -> OtlpReceiver {
        let spans: Spans = Arc::default();
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (grpc_endpoint, http_endpoint) = (
            format!("http://{}", grpc.local_addr().unwrap()),
            format!("http://{}", http.local_addr().unwrap()),
        );
        grpc.set_nonblocking(true).unwrap();
        http.set_nonblocking(true).unwrap();
        let (for_grpc, for_http) = (spans.clone(), spans.clone());
        crate::listener::on_own_runtime(async move {
            let grpc = tokio::net::TcpListener::from_std(grpc).unwrap();
            let http = tokio::net::TcpListener::from_std(http).unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Grpc(for_grpc)))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
            );
            loop {
                let Ok((conn, _)) = http.accept().await else {
                    continue;
                };
                let spans = for_http.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let spans = spans.clone();
                        async move { Ok::<_, std::convert::Infallible>(http_export(&spans, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                        .await;
                });
            }
        });
        OtlpReceiver {
            grpc_endpoint,
            http_endpoint,
            spans,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until the spans received satisfy `done`; panics with them after `limit`.
    pub fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                start.elapsed() < limit,
                "spans did not arrive within {limit:?}: {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn http_export(
    spans: &Spans,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let path_ok = req.uri().path() == "/v1/traces";
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body)
            .map(|r| (r, "http/json"))
            .map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(body)
            .map(|r| (r, "http/protobuf"))
            .map_err(|e| e.to_string())
    };
    match decoded {
        Ok((r, transport)) if path_ok => {
            keep(spans, r, transport);
            let (ct, body) = if json {
                ("application/json", bytes::Bytes::from_static(b"{}"))
            } else {
                (
                    "application/x-protobuf",
                    bytes::Bytes::from(ExportTraceServiceResponse::default().encode_to_vec()),
                )
            };
            hyper::Response::builder()
                .header("content-type", ct)
                .body(http_body_util::Full::new(body))
                .unwrap()
        }
        other => hyper::Response::builder()
            .status(400)
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                "{:?}",
                other.err()
            ))))
            .unwrap(),
    }
}
