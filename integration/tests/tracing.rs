//! Traces over OTLP, received by the tests' own collector on loopback and decoded: a span per
//! request with a child per store operation, the caller's `traceparent` continued, the trace
//! passed on to an upstream registry, over gRPC, HTTP/protobuf and HTTP/JSON, configured by
//! the standard `OTEL_*` variables or by `berth.tracing`.

use std::time::Duration;

use integration::Berth;
use integration::http::Api;
use integration::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use reqwest::Method;

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn filesystem(root: &std::path::Path) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n",
        root.display()
    )
}

/// Pushes an image, the manifest PUT carrying the caller's `traceparent`.
async fn traced_push(api: &Api, repo: &str) {
    let body = api.image_manifest(repo, "traced").await;
    let r = api
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/v1"),
            &[
                ("content-type", OCI),
                ("traceparent", &format!("00-{TRACE}-{CALLER_SPAN}-01")),
            ],
            Some(body),
        )
        .await;
    assert_eq!(r.status(), 201);
}

/// The manifest PUT's request span, continuing the caller's trace, with store spans under it.
fn check_request_and_store_spans(spans: &[ReceivedSpan], service: &str) {
    let request = spans
        .iter()
        .find(|s| s.trace_id == TRACE && s.parent_span_id == CALLER_SPAN)
        .unwrap_or_else(|| panic!("no span continues the caller's trace: {spans:#?}"));
    assert_eq!(request.service, service);
    assert_eq!(request.name, "PUT manifest", "{request:#?}");
    assert_eq!(request.attributes["http.response.status_code"], "201");
    assert_eq!(request.attributes["http.request.method"], "PUT");
    assert_eq!(request.attributes["repository"], "traced/app");
    let children: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == request.span_id)
        .collect();
    assert!(
        children
            .iter()
            .any(|s| s.name.starts_with("store ") && s.attributes["store.backend"] == "filesystem"),
        "no store span under the request: {children:#?}"
    );
    assert!(children.iter().all(|s| s.trace_id == TRACE));
    // The pushes before it, with no traceparent, are traces of their own.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "POST upload_start" && s.parent_span_id.is_empty()),
        "{spans:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_collector_over_grpc_http_protobuf_and_http_json() {
    let receiver = OtlpReceiver::start();
    for (protocol, endpoint) in [
        ("grpc", receiver.grpc_endpoint.clone()),
        ("http/protobuf", receiver.http_endpoint.clone()),
        ("http/json", receiver.http_endpoint.clone()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let service = format!("berth-{}", protocol.replace('/', "-"));
        let berth = Berth::with_config(
            &filesystem(dir.path()),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_SERVICE_NAME", service.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
        );
        traced_push(&Api::new(&berth.url), "traced/app").await;
        let spans = receiver.wait_for(Duration::from_secs(20), |spans| {
            spans
                .iter()
                .any(|s| s.service == service && s.parent_span_id == CALLER_SPAN)
        });
        let mine: Vec<ReceivedSpan> = spans.into_iter().filter(|s| s.service == service).collect();
        assert!(mine.iter().all(|s| s.transport == protocol), "{protocol}");
        check_request_and_store_spans(&mine, &service);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_alone_turns_traces_on_and_the_trace_goes_on_upstream() {
    let receiver = OtlpReceiver::start();
    let tracing = |name: &str| {
        format!(
            "berth:\n  tracing:\n    endpoint: {}\n    protocol: http/json\n    servicename: {name}\n",
            receiver.http_endpoint
        )
    };
    let (up_dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upstream = Berth::with_config(
        &format!("{}{}", filesystem(up_dir.path()), tracing("upstream")),
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let api = Api::new(&upstream.url);
    let body = api.image_manifest("library/app", "cached").await;
    assert_eq!(
        api.put_manifest("library/app", "v1", OCI, &body)
            .await
            .status(),
        201
    );
    let cache = Berth::with_config(
        &format!(
            "{}proxy:\n  remoteurl: http://{}\n{}",
            filesystem(cache_dir.path()),
            upstream.host,
            tracing("cache")
        ),
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let r = Api::new(&cache.url)
        .send(
            Method::GET,
            "/v2/library/app/manifests/v1",
            &[
                ("accept", OCI),
                ("traceparent", &format!("00-{TRACE}-{CALLER_SPAN}-01")),
            ],
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    // The cache's request continues the caller's trace; its call upstream is a child of it;
    // the upstream's request continues the trace under that call.
    let spans = receiver.wait_for(Duration::from_secs(20), |spans| {
        spans
            .iter()
            .any(|s| s.service == "upstream" && s.trace_id == TRACE)
    });
    let request = spans
        .iter()
        .find(|s| s.service == "cache" && s.parent_span_id == CALLER_SPAN)
        .unwrap_or_else(|| panic!("{spans:#?}"));
    let calls: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "cache" && s.trace_id == TRACE)
        .filter(|s| s.attributes.contains_key("server.address"))
        .collect();
    assert!(!calls.is_empty(), "{spans:#?}");
    assert!(
        calls.iter().all(|c| c.parent_span_id == request.span_id),
        "{calls:#?}"
    );
    let served_upstream: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "upstream" && s.trace_id == TRACE)
        .filter(|s| s.attributes.contains_key("http.route"))
        .collect();
    assert!(!served_upstream.is_empty());
    for s in served_upstream {
        assert!(
            calls.iter().any(|c| c.span_id == s.parent_span_id),
            "{s:#?} is not under a call of the cache: {calls:#?}"
        );
    }
}
