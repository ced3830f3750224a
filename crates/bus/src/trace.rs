//! Trace context across the bus: the producer's span context travels in the
//! W3C `traceparent` (and `tracestate`) headers of a command, so one trace
//! shows an emit from the gRPC call to the edges that deliver it. Each
//! publication is a PRODUCER span (`publish`) under the current span; the
//! receiving side makes its span (kind CONSUMER) a child of it with [`adopt`].
//!
//! A caller's own trace context, from the `traceparent` of a gRPC request, is
//! kept for the call's task by [`with_caller`], and the call's SERVER span
//! continues it with [`adopt_caller`].
//!
//! Off unless the process installed an OpenTelemetry exporter ([`enable`]);
//! then nothing is injected or extracted, and no header is added.

use std::collections::HashMap;
use std::future::Future;
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

/// Adds the context of a PRODUCER span (child of the current span) to
/// outgoing headers: the receivers' spans become its children.
pub fn inject(headers: &mut Headers) {
    if !enabled() {
        return;
    }
    let span = tracing::info_span!(
        "publish",
        otel.name = "publish",
        otel.kind = "producer",
        messaging.system = "nats"
    );
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Inject(headers)));
}

tokio::task_local! {
    /// The trace context a gRPC caller sent, for the task serving its call.
    static CALLER: opentelemetry::Context;
}

struct Pairs(HashMap<&'static str, String>);

impl Extractor for Pairs {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().copied().collect()
    }
}

/// Runs `call` with the caller's trace context (its W3C `traceparent` and
/// `tracestate` request headers) available to [`adopt_caller`].
pub async fn with_caller<F: Future>(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
    call: F,
) -> F::Output {
    let Some(traceparent) = traceparent.filter(|_| enabled()) else {
        return call.await;
    };
    let mut pairs = Pairs(HashMap::from([("traceparent", traceparent.to_owned())]));
    if let Some(state) = tracestate {
        pairs.0.insert("tracestate", state.to_owned());
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&pairs));
    CALLER.scope(cx, call).await
}

/// Makes `span` a child of the caller's trace context, if the call came with
/// one (see [`with_caller`]). Call before the span is entered.
pub fn adopt_caller(span: &tracing::Span) {
    if !enabled() {
        return;
    }
    let _ = CALLER.try_with(|cx| span.set_parent(cx.clone()));
}

/// Makes `span` a child of the context the headers carry, if any.
pub fn adopt(span: &tracing::Span, headers: &Headers) {
    if !enabled() || headers.get("traceparent").is_none() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(headers)));
    let _ = span.set_parent(cx);
}
