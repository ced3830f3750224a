//! Logs (`tracing`, plain or JSON) and, with `--otlp-endpoint`, OpenTelemetry
//! traces exported over OTLP/gRPC. Traces are off by default; then no span is
//! created on the hot paths and no trace header travels on the bus.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogFormat, Role};

/// How often finished spans are sent to the collector.
const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// Where traces go and how many.
pub struct TraceConfig {
    pub endpoint: String,
    /// Fraction of new traces kept (0 to 1); a trace that arrives with a
    /// sampled parent is always kept.
    pub ratio: f64,
}

/// Keeps the exporter alive; flushes it on drop.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("roomcast: trace export at exit failed: {e}");
            }
        }
    }
}

/// Installs logging, and tracing when configured. Must run inside the tokio
/// runtime (the OTLP exporter uses it).
pub fn init(
    role: Role,
    log: Option<&str>,
    format: LogFormat,
    traces: Option<TraceConfig>,
) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_new(log.unwrap_or("info"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Plain => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let Some(traces) = traces else {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init();
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(traces.endpoint.clone())
        .build()
        .with_context(|| format!("cannot set up the otlp exporter for {}", traces.endpoint))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            traces.ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(format!("roomcast-{}", role.name()))
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("roomcast"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
    roomcast_bus::trace::enable();
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// A layer of the gRPC server that runs each call with its caller's W3C trace
/// context (`traceparent`, `tracestate` request headers), so that the call's
/// SERVER span joins the caller's trace ([`roomcast_bus::trace::with_caller`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct CallerTraceLayer;

impl<S> tower::Layer<S> for CallerTraceLayer {
    type Service = CallerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerTrace(inner)
    }
}

/// See [`CallerTraceLayer`].
#[derive(Clone, Debug)]
pub struct CallerTrace<S>(S);

type BoxedCall<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B> tower::Service<axum::http::Request<B>> for CallerTrace<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxedCall<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        if !roomcast_bus::trace::enabled() {
            return Box::pin(self.0.call(req));
        }
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (parent, state) = (header("traceparent"), header("tracestate"));
        let call = self.0.call(req);
        Box::pin(async move {
            roomcast_bus::trace::with_caller(parent.as_deref(), state.as_deref(), call).await
        })
    }
}
