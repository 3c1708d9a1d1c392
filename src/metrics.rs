//! Prometheus metrics, kept in process and rendered as text by `GET /metrics`. Labels are bounded:
//! route templates (never raw URIs), the three views, the fixed triggers and statuses.
//!
//! Per-view freshness (last successful refresh, data age) is not kept here but read from the refresh
//! log at scrape time, so it is right whichever process refreshed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::refresh::{RefreshStatus, RefreshTrigger};
use crate::views::ViewName;

const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const REFRESH_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

#[derive(Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    requests: BTreeMap<(String, String, u16), u64>,
    request_seconds: BTreeMap<String, Histogram>,
    refreshes: BTreeMap<(ViewName, &'static str, RefreshStatusLabel), u64>,
    refresh_seconds: BTreeMap<ViewName, Histogram>,
    notifications: u64,
    refreshes_after_notifications: u64,
}

type RefreshStatusLabel = &'static str;

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

fn status_label(status: RefreshStatus) -> &'static str {
    match status {
        RefreshStatus::Ok => "ok",
        RefreshStatus::Error => "error",
        RefreshStatus::Skipped => "skipped",
    }
}

/// What the refresh log says about one view, for the freshness gauges.
pub struct ViewFreshness {
    pub view: String,
    pub last_success_unix: Option<f64>,
    pub age_seconds: Option<f64>,
}

impl Metrics {
    pub fn record_request(&self, route: &str, method: &str, status: u16, latency: Duration) {
        let mut registry = self.registry.lock().expect("not poisoned");
        *registry
            .requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        registry
            .request_seconds
            .entry(route.to_owned())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(latency.as_secs_f64());
    }

    pub fn record_refresh(
        &self,
        view: ViewName,
        trigger: RefreshTrigger,
        status: RefreshStatus,
        took: Duration,
    ) {
        let mut registry = self.registry.lock().expect("not poisoned");
        *registry
            .refreshes
            .entry((view, trigger.as_str(), status_label(status)))
            .or_default() += 1;
        let after_change = matches!(trigger, RefreshTrigger::Notify | RefreshTrigger::Poll);
        if after_change && status != RefreshStatus::Skipped {
            registry.refreshes_after_notifications += 1;
        }
        if status != RefreshStatus::Skipped {
            registry
                .refresh_seconds
                .entry(view)
                .or_insert_with(|| Histogram::new(&REFRESH_BUCKETS))
                .observe(took.as_secs_f64());
        }
    }

    pub fn record_notification(&self) {
        self.registry.lock().expect("not poisoned").notifications += 1;
    }

    pub fn render(&self, freshness: &[ViewFreshness]) -> String {
        let registry = self.registry.lock().expect("not poisoned");
        let mut out = String::new();
        out.push_str("# HELP http_requests_total HTTP requests by route template, method and status.\n# TYPE http_requests_total counter\n");
        for ((route, method, status), count) in &registry.requests {
            let _ = writeln!(
                out,
                "http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP http_request_duration_seconds HTTP request latency by route template.\n# TYPE http_request_duration_seconds histogram\n");
        for (route, histogram) in &registry.request_seconds {
            histogram.render(
                &mut out,
                "http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str("# HELP view_refreshes_total View refreshes by view, trigger and status (ok, error, skipped).\n# TYPE view_refreshes_total counter\n");
        for ((view, trigger, status), count) in &registry.refreshes {
            let _ = writeln!(
                out,
                "view_refreshes_total{{view=\"{view}\",trigger=\"{trigger}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP view_refresh_failures_total Failed view refreshes (the previous data stayed served).\n# TYPE view_refresh_failures_total counter\n");
        for view in ViewName::ALL {
            let failures: u64 = registry
                .refreshes
                .iter()
                .filter(|((v, _, s), _)| *v == view && *s == "error")
                .map(|(_, n)| n)
                .sum();
            let _ = writeln!(
                out,
                "view_refresh_failures_total{{view=\"{view}\"}} {failures}"
            );
        }
        out.push_str("# HELP view_refresh_duration_seconds Duration of view refreshes done by this process.\n# TYPE view_refresh_duration_seconds histogram\n");
        for (view, histogram) in &registry.refresh_seconds {
            histogram.render(
                &mut out,
                "view_refresh_duration_seconds",
                &format!("view=\"{view}\""),
            );
        }
        out.push_str("# HELP view_last_success_timestamp_seconds Snapshot time of the view's last successful refresh (any process).\n# TYPE view_last_success_timestamp_seconds gauge\n");
        for view in freshness {
            if let Some(at) = view.last_success_unix {
                let _ = writeln!(
                    out,
                    "view_last_success_timestamp_seconds{{view=\"{}\"}} {at}",
                    view.view
                );
            }
        }
        out.push_str("# HELP view_data_age_seconds Seconds since the snapshot of the data the view serves.\n# TYPE view_data_age_seconds gauge\n");
        for view in freshness {
            if let Some(age) = view.age_seconds {
                let _ = writeln!(out, "view_data_age_seconds{{view=\"{}\"}} {age}", view.view);
            }
        }
        out.push_str("# HELP refresh_notifications_total Base-table changes seen: notifications received (REFRESH_NOTIFY) or changes found by polling.\n# TYPE refresh_notifications_total counter\n");
        let _ = writeln!(
            out,
            "refresh_notifications_total {}",
            registry.notifications
        );
        out.push_str("# HELP refresh_notification_refreshes_total View refreshes that base-table changes caused.\n# TYPE refresh_notification_refreshes_total counter\n");
        let _ = writeln!(
            out,
            "refresh_notification_refreshes_total {}",
            registry.refreshes_after_notifications
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_rendered_with_inf() {
        let metrics = Metrics::default();
        metrics.record_request("/prospects", "GET", 200, Duration::from_millis(3));
        metrics.record_request("/prospects", "GET", 200, Duration::from_millis(30));
        let text = metrics.render(&[]);
        assert!(
            text.contains(
                "http_requests_total{route=\"/prospects\",method=\"GET\",status=\"200\"} 2"
            )
        );
        assert!(
            text.contains(
                "http_request_duration_seconds_bucket{route=\"/prospects\",le=\"0.005\"} 1"
            )
        );
        assert!(
            text.contains(
                "http_request_duration_seconds_bucket{route=\"/prospects\",le=\"0.05\"} 2"
            )
        );
        assert!(
            text.contains(
                "http_request_duration_seconds_bucket{route=\"/prospects\",le=\"+Inf\"} 2"
            )
        );
    }

    #[test]
    fn failures_are_counted_per_view_even_when_zero() {
        let metrics = Metrics::default();
        metrics.record_refresh(
            ViewName::CompanySummaryView,
            RefreshTrigger::Schedule,
            RefreshStatus::Error,
            Duration::from_secs(1),
        );
        let text = metrics.render(&[]);
        assert!(text.contains("view_refresh_failures_total{view=\"company_summary_view\"} 1"));
        assert!(text.contains("view_refresh_failures_total{view=\"company_prospect_view\"} 0"));
    }
}
