//! Prometheus metrics, kept in process and rendered as text by `GET /metrics`. Labels are bounded:
//! route templates (never raw URIs), the three views, the fixed triggers and statuses.
//!
//! Per-view freshness (last successful refresh, data age) and mode are not kept here but read from
//! the database at scrape time, so they are right whichever process refreshed or converted. This
//! module knows nothing of how views are refreshed: the refresher reports into it with plain labels.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::reads::{ReplicaStatus, Server};
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
    refreshes: BTreeMap<(ViewName, &'static str, &'static str), u64>,
    refresh_seconds: BTreeMap<ViewName, Histogram>,
    rows_changed: BTreeMap<ViewName, u64>,
    companies_applied: u64,
    notifications: u64,
    refreshes_after_notifications: u64,
}

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

/// What the database says about one view, for the freshness and mode gauges.
pub struct ViewFreshness {
    pub view: String,
    /// `refresh` or `incremental`.
    pub mode: Option<String>,
    pub last_success_unix: Option<f64>,
    pub age_seconds: Option<f64>,
}

/// This instance's response cache (src/http/response_cache.rs), read at scrape time.
#[derive(Debug, Default)]
pub struct ResponseCacheFigures {
    /// False with `RESPONSE_CACHE_BYTES=0`.
    pub enabled: bool,
    /// Per view, in `ViewName::ALL` order.
    pub per_view: [ViewCacheCounts; 3],
    /// Entries pushed out by the byte bound.
    pub evictions: u64,
    /// Bytes held (bodies, keys and overhead), as the bound counts them.
    pub bytes: u64,
    pub entries: u64,
}

/// Responses of one view's endpoints on this instance: served from the cache, rendered (a query
/// ran), or served by waiting for an identical request's render.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ViewCacheCounts {
    pub hits: u64,
    pub misses: u64,
    pub coalesced: u64,
    /// Share of responses that ran no query of their own: (hits + coalesced) / all; null before the
    /// first response.
    pub hit_ratio: Option<f64>,
}

impl ViewCacheCounts {
    pub fn new(hits: u64, misses: u64, coalesced: u64) -> ViewCacheCounts {
        let total = hits + misses + coalesced;
        ViewCacheCounts {
            hits,
            misses,
            coalesced,
            hit_ratio: (total > 0).then(|| (hits + coalesced) as f64 / total as f64),
        }
    }
}

/// Triggers whose refreshes base-table changes caused.
const CHANGE_TRIGGERS: [&str; 3] = ["notify", "poll", "incremental"];

/// One finished refresh, apply or rebuild of one view, as the refresher reports it.
pub struct RefreshObservation {
    pub view: ViewName,
    /// What asked for it (`schedule`, `poll`, `incremental`, ...).
    pub trigger: &'static str,
    /// `ok`, `error` or `skipped` (another process did the work).
    pub status: &'static str,
    pub took: Duration,
    /// Rows deleted plus rows inserted, for table-backed views.
    pub rows_changed: Option<i64>,
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

    pub fn record_refresh(&self, refresh: RefreshObservation) {
        let mut registry = self.registry.lock().expect("not poisoned");
        *registry
            .refreshes
            .entry((refresh.view, refresh.trigger, refresh.status))
            .or_default() += 1;
        if refresh.status == "skipped" {
            return;
        }
        if CHANGE_TRIGGERS.contains(&refresh.trigger) {
            registry.refreshes_after_notifications += 1;
        }
        registry
            .refresh_seconds
            .entry(refresh.view)
            .or_insert_with(|| Histogram::new(&REFRESH_BUCKETS))
            .observe(refresh.took.as_secs_f64());
        if let Some(rows) = refresh.rows_changed {
            *registry.rows_changed.entry(refresh.view).or_default() += rows.max(0) as u64;
        }
    }

    /// One incremental apply recomputed this many companies.
    pub fn record_apply(&self, companies: i64) {
        self.registry
            .lock()
            .expect("not poisoned")
            .companies_applied += companies.max(0) as u64;
    }

    pub fn record_notification(&self) {
        self.registry.lock().expect("not poisoned").notifications += 1;
    }

    /// `serving`: where data reads go now (None while they are refused); `replica`: its state,
    /// when one is configured.
    pub fn render(
        &self,
        freshness: &[ViewFreshness],
        cache: &ResponseCacheFigures,
        serving: Option<Server>,
        replica: Option<&ReplicaStatus>,
    ) -> String {
        let registry = self.registry.lock().expect("not poisoned");
        let mut out = String::new();
        render_response_cache(&mut out, cache);
        render_reads(&mut out, serving, replica);
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
        out.push_str("# HELP view_rows_changed_total Rows deleted plus inserted in table-backed views by this process's applies and rebuilds.\n# TYPE view_rows_changed_total counter\n");
        for (view, rows) in &registry.rows_changed {
            let _ = writeln!(out, "view_rows_changed_total{{view=\"{view}\"}} {rows}");
        }
        out.push_str("# HELP incremental_companies_applied_total Companies whose rows this process's incremental applies recomputed.\n# TYPE incremental_companies_applied_total counter\n");
        let _ = writeln!(
            out,
            "incremental_companies_applied_total {}",
            registry.companies_applied
        );
        out.push_str("# HELP view_maintenance_mode How each view is kept fresh now: 1 for its mode (refresh: materialized view; incremental: table).\n# TYPE view_maintenance_mode gauge\n");
        for view in freshness {
            if let Some(mode) = &view.mode {
                let _ = writeln!(
                    out,
                    "view_maintenance_mode{{view=\"{}\",mode=\"{mode}\"}} 1",
                    view.view
                );
            }
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

fn render_reads(out: &mut String, serving: Option<Server>, replica: Option<&ReplicaStatus>) {
    out.push_str("# HELP reads_served_from Where data reads go now: 1 for the server serving them (0 for both while they are refused).\n# TYPE reads_served_from gauge\n");
    for server in [Server::Primary, Server::Replica] {
        let _ = writeln!(
            out,
            "reads_served_from{{server=\"{}\"}} {}",
            server.as_str(),
            u8::from(serving == Some(server))
        );
    }
    let Some(replica) = replica else {
        return;
    };
    out.push_str("# HELP replica_up Whether the replica (READ_DATABASE_URL) answered its last probe.\n# TYPE replica_up gauge\n");
    let _ = writeln!(out, "replica_up {}", u8::from(replica.reachable));
    out.push_str("# HELP replica_lag_seconds How long ago the primary was at the WAL position the replica has replayed (absent while unknown).\n# TYPE replica_lag_seconds gauge\n");
    if let Some(lag) = replica.lag_seconds {
        let _ = writeln!(out, "replica_lag_seconds {lag}");
    }
    out.push_str("# HELP replica_max_lag_seconds MAX_REPLICA_LAG: past it reads leave the replica.\n# TYPE replica_max_lag_seconds gauge\n");
    let _ = writeln!(out, "replica_max_lag_seconds {}", replica.max_lag_seconds);
    out.push_str("# HELP replica_fallbacks_total Times reads left the replica (down, or lagging past MAX_REPLICA_LAG).\n# TYPE replica_fallbacks_total counter\n");
    let _ = writeln!(out, "replica_fallbacks_total {}", replica.fallbacks);
}

fn render_response_cache(out: &mut String, cache: &ResponseCacheFigures) {
    type Count = fn(&ViewCacheCounts) -> u64;
    let counters: [(&str, &str, Count); 3] = [
        (
            "response_cache_hits_total",
            "Data responses served from this instance's response cache.",
            |c| c.hits,
        ),
        (
            "response_cache_misses_total",
            "Data responses rendered by a query and then cached.",
            |c| c.misses,
        ),
        (
            "response_cache_coalesced_total",
            "Data responses that waited for an identical request's query instead of running their own.",
            |c| c.coalesced,
        ),
    ];
    for (name, help, count) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (view, counts) in ViewName::ALL.iter().zip(&cache.per_view) {
            let _ = writeln!(out, "{name}{{view=\"{view}\"}} {}", count(counts));
        }
    }
    let totals = [
        (
            "response_cache_evictions_total",
            "counter",
            "Cached responses pushed out by RESPONSE_CACHE_BYTES.",
            cache.evictions,
        ),
        (
            "response_cache_bytes",
            "gauge",
            "Bytes the response cache holds (bodies, keys, overhead).",
            cache.bytes,
        ),
        (
            "response_cache_entries",
            "gauge",
            "Responses the response cache holds.",
            cache.entries,
        ),
        (
            "response_cache_enabled",
            "gauge",
            "1 when the response cache is on (RESPONSE_CACHE_BYTES > 0).",
            u64::from(cache.enabled),
        ),
    ];
    for (name, kind, help, value) in totals {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
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
        let text = metrics.render(
            &[],
            &ResponseCacheFigures::default(),
            Some(Server::Primary),
            None,
        );
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
        metrics.record_refresh(RefreshObservation {
            view: ViewName::CompanySummaryView,
            trigger: "schedule",
            status: "error",
            took: Duration::from_secs(1),
            rows_changed: None,
        });
        let text = metrics.render(
            &[],
            &ResponseCacheFigures::default(),
            Some(Server::Primary),
            None,
        );
        assert!(text.contains("view_refresh_failures_total{view=\"company_summary_view\"} 1"));
        assert!(text.contains("view_refresh_failures_total{view=\"company_prospect_view\"} 0"));
    }
}
