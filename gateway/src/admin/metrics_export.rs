//! Installs the process-wide Prometheus recorder for the `metrics` facade.
//!
//! Counters and gauges only: the exporter's histograms keep every sample
//! until a scrape drains them, so the one histogram, the request
//! durations, is counted in fixed buckets by [`crate::proxy::durations`]
//! and appended to the exporter's text by `/metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the recorder once; later calls return `None`.
pub fn install_recorder() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    Some(handle)
}
