//! Per-node handles for the `kgw_requests_total` counter, one per class and
//! common status, registered with the metrics recorder on first use and then
//! only incremented: a request does one atomic add, with no registry lookup,
//! label hashing or label allocation.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, SharedString};

use crate::classify::TrafficClass;

/// Statuses with a cached handle; any other status takes the slow path.
const CACHED_STATUSES: [u16; 14] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 500, 502, 503, 504,
];

/// `kgw_requests_total{class, status, upstream}` handles for one upstream.
pub struct RequestCounters {
    upstream: Arc<str>,
    /// Indexed by class, then by position in [`CACHED_STATUSES`].
    handles: [[OnceLock<Counter>; CACHED_STATUSES.len()]; TrafficClass::ALL.len()],
}

impl RequestCounters {
    /// `upstream` is the label value (`host:port`, or `-` for requests that
    /// reached no node).
    pub fn new(upstream: Arc<str>) -> RequestCounters {
        RequestCounters {
            upstream,
            handles: Default::default(),
        }
    }

    /// Counts one answered request.
    pub fn increment(&self, class: TrafficClass, status: u16) {
        match CACHED_STATUSES.iter().position(|&s| s == status) {
            Some(slot) => self.handles[class.index()][slot]
                .get_or_init(|| self.register(class, status))
                .increment(1),
            None => self.register(class, status).increment(1),
        }
    }

    /// The `upstream` label value.
    pub fn upstream(&self) -> &Arc<str> {
        &self.upstream
    }

    fn register(&self, class: TrafficClass, status: u16) -> Counter {
        metrics::counter!(
            "kgw_requests_total",
            "class" => class.as_str(),
            "status" => status_label(status),
            "upstream" => self.upstream.clone(),
        )
    }
}

impl std::fmt::Debug for RequestCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCounters")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// Status codes as static label values: no allocation for the common ones.
fn status_label(status: u16) -> SharedString {
    match status {
        200 => "200".into(),
        201 => "201".into(),
        204 => "204".into(),
        301 => "301".into(),
        302 => "302".into(),
        304 => "304".into(),
        400 => "400".into(),
        401 => "401".into(),
        403 => "403".into(),
        404 => "404".into(),
        500 => "500".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_and_uncached_statuses_count_under_their_labels() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let counters = RequestCounters::new("10.0.0.1:7070".into());
            counters.increment(TrafficClass::Query, 200);
            counters.increment(TrafficClass::Query, 200);
            counters.increment(TrafficClass::Job, 200);
            counters.increment(TrafficClass::Other, 418);
        });
        let mut seen: Vec<(String, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let labels: Vec<String> = key
                    .key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                let count = match value {
                    metrics_util::debugging::DebugValue::Counter(n) => n,
                    other => panic!("not a counter: {other:?}"),
                };
                (labels.join(","), count)
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("class=job,status=200,upstream=10.0.0.1:7070".to_string(), 1),
                (
                    "class=other,status=418,upstream=10.0.0.1:7070".to_string(),
                    1
                ),
                (
                    "class=query,status=200,upstream=10.0.0.1:7070".to_string(),
                    2
                ),
            ]
        );
    }
}
