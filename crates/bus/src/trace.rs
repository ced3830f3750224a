//! Trace context across the bus: the producer's span context travels in the
//! W3C `traceparent` (and `tracestate`) headers of a command, so one trace
//! shows an emit from the gRPC call to the edges that deliver it.
//!
//! Off unless the process installed an OpenTelemetry exporter ([`enable`]);
//! then nothing is injected or extracted, and no header is added.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Headers;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns propagation on; called once the exporter is installed.
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

struct Inject<'a>(&'a mut Headers);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.append(key, value);
    }
}

struct Extract<'a>(&'a Headers);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}

/// Adds the current span's context to outgoing headers.
pub fn inject(headers: &mut Headers) {
    if !enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Inject(headers)));
}

/// Makes `span` a child of the context the headers carry, if any.
pub fn adopt(span: &tracing::Span, headers: &Headers) {
    if !enabled() || headers.get("traceparent").is_none() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(headers)));
    let _ = span.set_parent(cx);
}
