//! Logs and trace export.

use anyhow::bail;

use super::{Defaults, LogFormat, Settings};
use crate::telemetry::TraceConfig;

impl Settings {
    /// Trace export over OTLP; `None` when no collector is given.
    pub(super) fn traces(&self, d: &Defaults) -> anyhow::Result<Option<TraceConfig>> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("otlp-endpoint {endpoint:?} must be an http:// or https:// url");
        }
        let ratio = self.trace_sample_ratio.unwrap_or(d.trace_sample_ratio);
        if !(0.0..=1.0).contains(&ratio) {
            bail!("trace-sample-ratio must be between 0 and 1");
        }
        Ok(Some(TraceConfig {
            endpoint: endpoint.clone(),
            ratio,
        }))
    }

    /// The log filter and format.
    pub(super) fn logs(&self, d: &Defaults) -> (String, LogFormat) {
        (
            self.log.clone().unwrap_or_else(|| d.log.clone()),
            self.log_format.unwrap_or(d.log_format),
        )
    }
}
