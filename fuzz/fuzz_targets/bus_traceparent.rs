//! W3C trace context in a command's headers (`traceparent`, `tracestate`), as
//! an edge adopts it for the span that delivers the command.
//!
//! Runs `roomcast_bus::trace::adopt` with the propagator the binary installs.
//! Input: the `traceparent` value, then optionally `\n` and the `tracestate`.
//! Property: never panics, whatever the header values.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use roomcast_bus::{trace, Headers};

static INIT: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    INIT.call_once(|| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        trace::enable();
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (parent, state) = text.split_once('\n').unwrap_or((text, ""));
    let mut headers = Headers::new();
    headers.append("traceparent", parent);
    if !state.is_empty() {
        headers.append("tracestate", state);
    }
    let span = tracing::info_span!("deliver");
    trace::adopt(&span, &headers);
    // And the other way: the adopted context injected into outgoing headers.
    let _entered = span.enter();
    let mut out = Headers::new();
    trace::inject(&mut out);
});
