//! `berth.tracing` and the standard `OTEL_*` variables: where traces go over OTLP.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::{ConfigError, key_err};

/// `berth.tracing`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// Export traces (default: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set).
    pub enabled: Option<bool>,
    /// The collector's base URL (`http://otel-collector:4318`, or `:4317` for gRPC); the
    /// variables win over it, as the OpenTelemetry specification has it.
    pub endpoint: Option<String>,
    /// `grpc`, `http/protobuf` (default) or `http/json`.
    pub protocol: Option<String>,
    /// The `service.name` of the spans (default `OTEL_SERVICE_NAME`, else `berth`).
    pub servicename: Option<String>,
    /// The share of traces kept, 0 to 1, when the caller did not decide (default 1).
    pub samplingratio: Option<f64>,
    /// Headers sent to the collector (an API key, say).
    pub headers: BTreeMap<String, String>,
}

/// How spans are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC.
    Grpc,
    /// OTLP over HTTP, protobuf bodies.
    HttpProtobuf,
    /// OTLP over HTTP, JSON bodies.
    HttpJson,
}

/// Where traces go, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The collector's base URL from the file, when the variables name none.
    pub endpoint: Option<String>,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// `service.name`.
    pub service_name: String,
    /// The share of root traces kept, when configured.
    pub sampling_ratio: Option<f64>,
    /// Headers from the file (the variables' are read by the exporter).
    pub headers: BTreeMap<String, String>,
}

fn protocol(text: &str, key: &str) -> Result<OtlpProtocol, ConfigError> {
    match text.trim() {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        "http/json" => Ok(OtlpProtocol::HttpJson),
        other => Err(key_err(
            key,
            format!("{other:?} is not grpc, http/protobuf or http/json"),
        )),
    }
}

/// `berth.tracing` with the environment; `None` when traces are not exported.
pub(super) fn tracing_settings(
    c: Option<&TracingConfig>,
    env: &HashMap<String, String>,
) -> Result<Option<TracingSettings>, ConfigError> {
    let var = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let endpoint_var =
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none");
    let on = c
        .and_then(|c| c.enabled)
        .unwrap_or(endpoint_var.is_some() || c.is_some_and(|c| c.endpoint.is_some()));
    if !on || disabled {
        return Ok(None);
    }
    let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .map(|p| (p, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| (p, "OTEL_EXPORTER_OTLP_PROTOCOL")))
    {
        Some((p, key)) => protocol(p, key)?,
        None => match c.and_then(|c| c.protocol.as_deref()) {
            Some(p) => protocol(p, "berth.tracing.protocol")?,
            None => OtlpProtocol::HttpProtobuf,
        },
    };
    let endpoint = c.and_then(|c| c.endpoint.clone());
    if let Some(e) = &endpoint
        && url::Url::parse(e).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
    {
        return Err(key_err(
            "berth.tracing.endpoint",
            format!("{e:?} is not an http(s) URL"),
        ));
    }
    let sampling_ratio = c.and_then(|c| c.samplingratio);
    if sampling_ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        return Err(key_err(
            "berth.tracing.samplingratio",
            "must be from 0 to 1",
        ));
    }
    Ok(Some(TracingSettings {
        endpoint,
        protocol,
        service_name: c
            .and_then(|c| c.servicename.clone())
            .or_else(|| var("OTEL_SERVICE_NAME").map(str::to_owned))
            .unwrap_or_else(|| "berth".into()),
        sampling_ratio,
        headers: c.map(|c| c.headers.clone()).unwrap_or_default(),
    }))
}
