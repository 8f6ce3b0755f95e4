//! Logging, traces and error reporting for both binaries, set up in one place.
//!
//! - **Logs**: JSON lines or compact human-readable output on stdout, filtered by `RUST_LOG`
//!   (default `info`). A JSON line written inside a traced span carries its `trace_id`.
//! - **Traces** (OpenTelemetry): on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. Spans go over OTLP `http/protobuf` through a
//!   batch processor; the SDK and exporter read the standard `OTEL_*` variables themselves
//!   (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`).
//!   The layer has its own filter (`info`), so `RUST_LOG=warn` quietens the logs, not the traces.
//!   W3C `traceparent`/`tracestate` is the propagation format ([`inject`], [`extract`]).
//!
//! [`init`] returns a [`Guard`]: keep it until the process ends; dropping it exports what is
//! still buffered.

mod errors;
mod http_client;
mod log_format;
mod sentry_transport;

pub use errors::{SentrySettings, scrub, scrub_text};

use std::collections::BTreeMap;

use opentelemetry::{global, propagation::Injector, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt as _, util::SubscriberInitExt as _};

/// How a binary wants its telemetry.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `OTEL_SERVICE_NAME` when that is unset: `api` or `worker`.
    pub service: &'static str,
    /// The service version on every span (`service.version`).
    pub version: &'static str,
    /// JSON lines (else compact text).
    pub json: bool,
    /// JSON lines also name the current span and its fields (the API's request span).
    pub current_span: bool,
    /// Error reporting (`SENTRY_DSN` set).
    pub sentry: Option<SentrySettings>,
}

/// Flushes and shuts down the exporters when dropped.
#[must_use = "dropping the guard shuts telemetry down"]
pub struct Guard {
    tracer: Option<SdkTracerProvider>,
    sentry: Option<sentry::ClientInitGuard>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("traces", &self.tracer.is_some())
            .field("errors", &self.sentry.is_some())
            .finish()
    }
}

impl Guard {
    /// Whether spans are exported.
    pub fn traces_enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Whether errors are reported to Sentry.
    pub fn errors_enabled(&self) -> bool {
        self.sentry.is_some()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer.take() {
            // Exports what is buffered; the batch thread does the (blocking) HTTP.
            if let Err(e) = provider.shutdown() {
                eprintln!("telemetry: trace exporter shutdown: {e}");
            }
        }
        // Dropping the Sentry guard flushes the events still queued (up to its shutdown timeout).
        drop(self.sentry.take());
    }
}

/// The `OTEL_*` variables that configure traces, read by the SDK and the exporter themselves
/// (opentelemetry_sdk / opentelemetry-otlp 0.33; `OTEL_SDK_DISABLED` by [`otel_configured`]).
/// `deploy/scripts/check-deploy.py` accepts exactly these in compose and k8s.
pub const OTEL_ENV: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
];

/// Whether the environment asks for trace export.
pub fn otel_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
        && !std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Installs the global subscriber (a second call, as in tests, leaves the first in place) and,
/// when configured, the trace exporter.
pub fn init(settings: &Settings) -> Guard {
    let tracer = if otel_configured() {
        match tracer_provider(settings) {
            Ok(p) => Some(p),
            Err(e) => {
                // Telemetry must not stop the service: say so and run without traces.
                eprintln!("telemetry: traces disabled: {e}");
                None
            }
        }
    } else {
        None
    };

    let sentry = settings
        .sentry
        .as_ref()
        .and_then(|s| match errors::init(s, settings.service) {
            Ok(guard) => Some(guard),
            Err(e) => {
                eprintln!("telemetry: error reporting disabled: {e}");
                None
            }
        });
    let sentry_layers = sentry.as_ref().map(|_| {
        use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
        use tracing::Level;
        use tracing_subscriber::filter::filter_fn;
        // Spans pass both filters, so their fields (request id, route, queue, task id) reach
        // the event. `api::error` logs the cause of a 5xx the actix integration reports as
        // that response's event: a breadcrumb there, not a second event.
        // (Spans at `info` and above only: enabling every dependency's trace spans would cost.)
        let errors = ErrorLayer::new().enable_span_attributes().with_filter(filter_fn(|md| {
            (md.is_span() && *md.level() <= Level::INFO) || (*md.level() == Level::ERROR && md.target() != "api::error")
        }));
        let crumbs = BreadcrumbLayer::new().with_filter(filter_fn(|md| {
            (md.is_span() && *md.level() <= Level::INFO)
                || *md.level() == Level::WARN
                || *md.level() == Level::INFO
                || (*md.level() == Level::ERROR && md.target() == "api::error")
        }));
        errors.and_then(crumbs)
    });

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = if settings.json {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(settings.current_span)
            .map_event_format(log_format::WithTraceId::new)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .compact()
            .with_filter(filter)
            .boxed()
    };
    let otel_layer = tracer.as_ref().map(|provider| {
        global::set_text_map_propagator(TraceContextPropagator::new());
        global::set_tracer_provider(provider.clone());
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(settings.service))
            .with_filter(EnvFilter::new("info"))
    });
    let installed = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .with(sentry_layers)
        .try_init();
    match (installed, &tracer) {
        (Ok(()), Some(_)) => TRACES_ON.store(true, std::sync::atomic::Ordering::Relaxed),
        // Another subscriber was there first (tests): nothing would feed this exporter.
        (Err(_), Some(_)) => eprintln!("telemetry: a subscriber was already installed; traces go nowhere"),
        (_, None) => {}
    }
    Guard { tracer, sentry }
}

fn tracer_provider(settings: &Settings) -> Result<SdkTracerProvider, Box<dyn std::error::Error + Send + Sync>> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(http_client::BlockingReqwest::new()?)
        .build()?;
    // `Resource::builder` reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the binary's
    // name applies only when neither names the service.
    let mut resource = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name(settings.service);
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new("service.version", settings.version))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

pub use opentelemetry::propagation::Extractor;

/// A trace context as a plain map (`traceparent`, `tracestate`), for a job payload.
pub type TraceContext = BTreeMap<String, String>;

struct MapCarrier<'a>(&'a mut TraceContext);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapReader<'a>(&'a TraceContext);

impl Extractor for MapReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The current span's trace context, `None` when there is none (traces off, or no span).
pub fn inject_current() -> Option<TraceContext> {
    if !traces_on() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let mut map = TraceContext::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MapCarrier(&mut map)));
    (!map.is_empty()).then_some(map)
}

/// Makes `span` a child of the trace context in `map` (a job's payload). Call before the span
/// is first entered; a missing or invalid context leaves it a root.
pub fn set_parent_from_map(span: &tracing::Span, map: &TraceContext) {
    if !traces_on() {
        return;
    }
    let cx = global::get_text_map_propagator(|p| p.extract(&MapReader(map)));
    set_parent(span, cx);
}

/// Makes `span` a child of the context an [`Extractor`] reads (HTTP headers). Call before the
/// span is first entered.
pub fn set_parent_from(span: &tracing::Span, carrier: &dyn Extractor) {
    if !traces_on() {
        return;
    }
    let cx = global::get_text_map_propagator(|p| p.extract(carrier));
    set_parent(span, cx);
}

fn set_parent(span: &tracing::Span, cx: opentelemetry::Context) {
    use opentelemetry::trace::TraceContextExt as _;
    if cx.span().span_context().is_valid() {
        // Errors only when there is no OTel layer (traces off) or the span already started.
        let _ = span.set_parent(cx);
    }
}

/// Renames `span`'s OpenTelemetry span once it has started (recording `otel.name` then is
/// ignored by the layer): a request span is named by its route, known only at the end.
pub fn set_span_name(span: &tracing::Span, name: impl FnOnce() -> String) {
    use opentelemetry::trace::TraceContextExt as _;
    if !traces_on() || span.is_disabled() {
        return;
    }
    span.context().span().update_name(name());
}

/// Set once the OpenTelemetry layer is installed.
static TRACES_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Traces are exported: without them, no request or job pays for reading or writing a context.
fn traces_on() -> bool {
    TRACES_ON.load(std::sync::atomic::Ordering::Relaxed)
}

/// The current trace id (32 hex digits), when the current span belongs to a trace.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = opentelemetry::Context::current();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
