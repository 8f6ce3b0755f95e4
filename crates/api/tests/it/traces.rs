//! Traces end to end (issue 12): the real `api` and `worker` binaries export OTLP/HTTP protobuf
//! to a local sink; one sign-up with a W3C `traceparent` must give one trace from the HTTP
//! request through the outbox to the worker's job span and its children.

use std::{collections::HashMap, time::Duration};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
};
use prost::Message as _;
use testkit::{ApiProcess, WorkerProcess, model::NewUser, sink::HttpSink, worker_binary};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attrs: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect()
}

/// Every span the sink received, decoded.
fn spans(sink: &HttpSink) -> Vec<Span> {
    let mut out = Vec::new();
    for req in sink.received() {
        assert_eq!(req.path, "/v1/traces", "the exporter posts to the OTLP traces path");
        assert_eq!(req.header("content-type"), Some("application/x-protobuf"));
        let export = ExportTraceServiceRequest::decode(req.body.as_slice()).expect("an OTLP protobuf body");
        for rs in export.resource_spans {
            let resource = rs.resource.map(|r| attrs(&r.attributes)).unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attrs: attrs(&s.attributes),
                    });
                }
            }
        }
    }
    out
}

/// Whether `span`'s parent chain (within `all`) reaches the span `ancestor`.
fn descends_from(all: &[Span], span: &Span, ancestor: &str) -> bool {
    let by_id: HashMap<&str, &Span> = all.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut parent = span.parent.as_str();
    for _ in 0..32 {
        if parent == ancestor {
            return true;
        }
        match by_id.get(parent) {
            Some(p) if p.trace_id == span.trace_id => parent = p.parent.as_str(),
            _ => return false,
        }
    }
    false
}

#[tokio::test]
async fn one_trace_runs_from_the_request_through_the_outbox_to_the_job() {
    // Built first: a slow build must not leave the api's idle keep-alive connection to time out.
    let worker_bin = worker_binary(env!("CARGO_BIN_EXE_api"));
    let sink = HttpSink::start();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.url()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let otel: Vec<(&str, &str)> = otel.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = ApiProcess::spawn(env!("CARGO_BIN_EXE_api"), &otel).await;
    // RUST_LOG=info for the worker: its "e-mail sent" line must carry the trace id.
    let mut worker_env = otel.clone();
    worker_env.push(("RUST_LOG", "info"));
    let mut worker = WorkerProcess::spawn(&worker_bin, &api, &worker_env);

    let user = NewUser::new("traced@example.com");
    let res = api
        .send(
            api.client
                .post(api.url("/v1/auth/signup"))
                .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
                .json(&serde_json::to_value(&user).unwrap()),
        )
        .await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    let request_id = res.header("x-request-id").unwrap().to_owned();

    // The request's span: the caller's trace, the caller's span as parent, the route's attributes.
    let request = sink.wait_for(WAIT, "the request span", |_| {
        spans(&sink)
            .into_iter()
            .find(|s| s.service == "api" && s.attrs.get("request.id") == Some(&request_id))
    });
    assert_eq!(request.trace_id, TRACE_ID, "{request:?}");
    assert_eq!(request.parent, CALLER_SPAN, "{request:?}");
    assert_eq!(request.name, "POST /v1/auth/signup");
    assert_eq!(
        request.attrs.get("http.route").map(String::as_str),
        Some("/v1/auth/signup")
    );
    assert_eq!(
        request.attrs.get("http.response.status_code").map(String::as_str),
        Some("201")
    );
    assert_eq!(
        request.attrs.get("http.request.method").map(String::as_str),
        Some("POST")
    );

    // The worker's span for the verification e-mail continues the same trace, below the request
    // (through the unit of work that wrote the outbox row), and the mail is sent below it.
    let (job, mail) = sink.wait_for(WAIT, "the job span and its mail span", |_| {
        let all = spans(&sink);
        let job = all
            .iter()
            .find(|s| s.service == "worker" && s.name == "job email" && s.trace_id == TRACE_ID)?
            .clone();
        let mail = all
            .iter()
            .find(|s| s.name == "mail send" && s.parent == job.span_id)?
            .clone();
        Some((job, mail))
    });
    let all = spans(&sink);
    assert!(
        descends_from(&all, &job, &request.span_id),
        "the job span's parents must reach the request span: {job:?}\n{all:#?}"
    );
    assert_eq!(mail.trace_id, TRACE_ID);
    assert!(
        all.iter()
            .any(|s| s.service == "worker" && s.name == "email prepare" && s.parent == job.span_id),
        "the Postgres reads of the job are in its trace: {all:#?}"
    );
    assert!(
        all.iter()
            .any(|s| s.service == "api" && s.name == "unit of work" && s.parent == request.span_id),
        "the request's transaction is a child of the request span: {all:#?}"
    );

    // The worker's JSON log line for the job carries the trace id.
    worker.stop(Duration::from_secs(5));
    let log = worker.log();
    assert!(
        log.lines()
            .any(|l| l.contains("e-mail sent") && l.contains(&format!("\"trace_id\":\"{TRACE_ID}\""))),
        "no JSON log line of the job with its trace id:\n{log}"
    );
}
