//! Prometheus metrics: recorded through the `metrics` facade into this instance's own
//! `metrics-exporter-prometheus` recorder (concurrent counters and histograms, no lock per request;
//! one recorder per instance, so that several servers in one process, as in the tests, keep their
//! own figures), rendered as the Prometheus text format by `GET /metrics`. Labels are bounded:
//! route templates (never raw URIs), the read models, the fixed triggers and statuses.
//!
//! What other parts of the system know is set at scrape time: per-view freshness and mode come from
//! the database (so they are right whichever process refreshed or converted), the response cache's
//! figures and where reads go from their owners. This module knows nothing of how views are
//! refreshed: the refresher reports into it with plain labels.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::reads::{ReplicaStatus, Server};
use crate::views::{Mode, PerView, ViewName};

const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const REFRESH_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Every metric: its name, its help text and what it is.
const METRICS: &[(&str, Kind, &str)] = &[
    (
        "http_requests_total",
        Kind::Counter,
        "HTTP requests by route template, method and status.",
    ),
    (
        "http_request_duration_seconds",
        Kind::Histogram,
        "HTTP request latency by route template.",
    ),
    (
        "role_requests_total",
        Kind::Counter,
        "Requests admitted to the read and admin routes, by role.",
    ),
    (
        "auth_refusals_total",
        Kind::Counter,
        "Requests refused before reading anything, by reason (unauthenticated, forbidden, rate_limited, locked_out, unavailable).",
    ),
    (
        "exported_rows_total",
        Kind::Counter,
        "CSV rows exported, by role.",
    ),
    (
        "view_refreshes_total",
        Kind::Counter,
        "View refreshes by view, trigger and status (ok, error, skipped).",
    ),
    (
        "view_refresh_failures_total",
        Kind::Counter,
        "Failed view refreshes (the previous data stayed served).",
    ),
    (
        "view_refresh_duration_seconds",
        Kind::Histogram,
        "Duration of view refreshes done by this process.",
    ),
    (
        "view_rows_changed_total",
        Kind::Counter,
        "Rows deleted plus inserted in table-backed views by this process's applies and rebuilds.",
    ),
    (
        "incremental_companies_applied_total",
        Kind::Counter,
        "Companies whose rows this process's incremental applies recomputed.",
    ),
    (
        "view_maintenance_mode",
        Kind::Gauge,
        "How each view is kept fresh now: 1 for its mode, 0 for the other (refresh: materialized view; incremental: table).",
    ),
    (
        "view_last_success_timestamp_seconds",
        Kind::Gauge,
        "Snapshot time of the view's last successful refresh (any process).",
    ),
    (
        "view_data_age_seconds",
        Kind::Gauge,
        "Seconds since the snapshot of the data the view serves.",
    ),
    (
        "view_work_in_progress",
        Kind::Gauge,
        "1 while a build beside (kind=build) or a repair (kind=repair) of the view runs in any process, else 0 (incremental mode).",
    ),
    (
        "view_work_done",
        Kind::Gauge,
        "How far the view's build or repair is, in its unit (tuples indexed, companies compared); 0 when none runs.",
    ),
    (
        "view_work_total",
        Kind::Gauge,
        "The total of view_work_done's unit for the build or repair that runs; 0 when none runs or it is not known.",
    ),
    (
        "view_work_chunks",
        Kind::Gauge,
        "Ranges of companies the view's running repair has compared; 0 when none runs.",
    ),
    (
        "view_work_rows",
        Kind::Gauge,
        "Rows the view's running repair has deleted plus inserted; 0 when none runs.",
    ),
    (
        "refresh_notifications_total",
        Kind::Counter,
        "Base-table changes seen: notifications received (REFRESH_NOTIFY) or changes found by polling.",
    ),
    (
        "refresh_notification_refreshes_total",
        Kind::Counter,
        "View refreshes that base-table changes caused.",
    ),
    (
        "response_cache_hits_total",
        Kind::Counter,
        "Data responses served from this instance's response cache.",
    ),
    (
        "response_cache_misses_total",
        Kind::Counter,
        "Data responses rendered by a query and then cached.",
    ),
    (
        "response_cache_coalesced_total",
        Kind::Counter,
        "Data responses that waited for an identical request's query instead of running their own.",
    ),
    (
        "response_cache_kept_total",
        Kind::Counter,
        "Cached responses served after incremental rounds that changed no row they show (how=unchanged), or whose totals and counts the changed rows updated (how=updated).",
    ),
    (
        "response_cache_dropped_total",
        Kind::Counter,
        "Cached responses rendered anew after a round: it changed a row they show (reason=changed), or the cache could not decide (reason=undecided: a search's terms, a rank, a full refresh).",
    ),
    (
        "response_cache_evictions_total",
        Kind::Counter,
        "Cached responses pushed out by RESPONSE_CACHE_BYTES.",
    ),
    (
        "response_cache_bytes",
        Kind::Gauge,
        "Bytes the response cache holds (bodies, keys, overhead).",
    ),
    (
        "response_cache_entries",
        Kind::Gauge,
        "Responses the response cache holds.",
    ),
    (
        "response_cache_enabled",
        Kind::Gauge,
        "1 when the response cache is on (RESPONSE_CACHE_BYTES > 0).",
    ),
    (
        "reads_served_from",
        Kind::Gauge,
        "Where data reads go now: 1 for the server serving them (0 for both while they are refused).",
    ),
    (
        "read_your_writes_total",
        Kind::Counter,
        "Requests with Prefer: min-freshness=now, by outcome: covered (answered with data covering every write committed before they arrived) or timeout (503).",
    ),
    (
        "read_your_writes_wait_seconds",
        Kind::Histogram,
        "How long requests with Prefer: min-freshness=now waited for data covering their arrival.",
    ),
    (
        "replica_up",
        Kind::Gauge,
        "Whether the replica (READ_DATABASE_URL) answered its last probe.",
    ),
    (
        "replica_lag_seconds",
        Kind::Gauge,
        "How long ago the primary was at the WAL position the replica has replayed (NaN while unknown).",
    ),
    (
        "replica_max_lag_seconds",
        Kind::Gauge,
        "MAX_REPLICA_LAG: past it reads leave the replica.",
    ),
    (
        "replica_fallbacks_total",
        Kind::Counter,
        "Times reads left the replica (down, or lagging past MAX_REPLICA_LAG).",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Why `auth::authenticate` refuses a request (every one counted from zero).
pub const REFUSAL_REASONS: [&str; 5] = [
    "unauthenticated",
    "forbidden",
    "rate_limited",
    "locked_out",
    "unavailable",
];

/// How a request with `Prefer: min-freshness=now` ended (every one counted from zero).
const OWN_WRITES_OUTCOMES: [&str; 2] = ["covered", "timeout"];

/// Triggers whose refreshes base-table changes caused.
const CHANGE_TRIGGERS: [&str; 3] = ["notify", "poll", "incremental"];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        let buckets =
            |name: &str, bounds: &[f64]| (Matcher::Full(name.to_owned()), bounds.to_vec());
        let recorder = [
            buckets("http_request_duration_seconds", &LATENCY_BUCKETS),
            buckets("read_your_writes_wait_seconds", &LATENCY_BUCKETS),
            buckets("view_refresh_duration_seconds", &REFRESH_BUCKETS),
        ]
        .into_iter()
        .fold(PrometheusBuilder::new(), |builder, (matcher, bounds)| {
            builder
                .set_buckets_for_metric(matcher, &bounds)
                .expect("the buckets are not empty")
        })
        .build_recorder();
        for (name, kind, help) in METRICS {
            let (name, help) = (KeyName::from(*name), SharedString::from(*help));
            match kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
        let metrics = Metrics {
            handle: recorder.handle(),
            recorder,
        };
        for view in ViewName::ALL {
            // Present from the start, so that a rate of failures is defined before the first one.
            metrics
                .counter("view_refresh_failures_total", view_label(view))
                .increment(0);
        }
        for reason in REFUSAL_REASONS {
            metrics.record_refusals(reason, 0);
        }
        for outcome in OWN_WRITES_OUTCOMES {
            metrics
                .counter(
                    "read_your_writes_total",
                    vec![Label::new("outcome", outcome)],
                )
                .increment(0);
        }
        for name in [
            "incremental_companies_applied_total",
            "refresh_notifications_total",
            "refresh_notification_refreshes_total",
        ] {
            metrics.counter(name, vec![]).increment(0);
        }
        metrics
    }
}

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

/// What the database says about one view, for the freshness, mode and work gauges.
pub struct ViewFreshness {
    pub view: ViewName,
    pub mode: Option<Mode>,
    pub last_success_unix: Option<f64>,
    pub age_seconds: Option<f64>,
    /// A build or repair in progress in any process.
    pub work: Option<WorkGauges>,
}

/// A build or repair in progress, as its gauges show it.
#[derive(Debug, Clone, Default)]
pub struct WorkGauges {
    /// `build` or `repair`.
    pub kind: &'static str,
    pub done: Option<i64>,
    pub total: Option<i64>,
    pub chunks: Option<i64>,
    pub rows: Option<i64>,
}

/// The kinds of work `view_work_in_progress` tells apart.
const WORK_KINDS: [&str; 2] = ["build", "repair"];

/// This instance's response cache (src/http/response_cache/), read at scrape time.
#[derive(Debug, Default)]
pub struct ResponseCacheFigures {
    /// False with `RESPONSE_CACHE_BYTES=0`.
    pub enabled: bool,
    pub per_view: PerView<ViewCacheCounts>,
    /// Entries pushed out by the byte bound.
    pub evictions: u64,
    /// Bytes held (bodies, keys and overhead), as the bound counts them.
    pub bytes: u64,
    pub entries: u64,
}

/// Responses of one view's endpoints on this instance: served from the cache, rendered (a query
/// ran), or served by waiting for an identical request's render; and what the rounds did to cached
/// responses.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ViewCacheCounts {
    /// Served from the cache (`kept` and `updated` included).
    pub hits: u64,
    pub misses: u64,
    pub coalesced: u64,
    /// Share of responses that ran no query of their own: (hits + coalesced) / all; null before the
    /// first response.
    pub hit_ratio: Option<f64>,
    /// Served from a cached response kept across rounds that changed no row it shows.
    pub kept: u64,
    /// Served from a cached response whose total or counts the rounds' changed rows updated.
    pub updated: u64,
    /// Cached responses rendered anew because a round changed a row they show ...
    pub dropped_changed: u64,
    /// ... or one the cache could not decide about (a search's terms, a rank, a full refresh).
    pub dropped_undecided: u64,
}

impl ViewCacheCounts {
    pub fn new(hits: u64, misses: u64, coalesced: u64) -> ViewCacheCounts {
        let total = hits + misses + coalesced;
        ViewCacheCounts {
            hits,
            misses,
            coalesced,
            hit_ratio: (total > 0).then(|| (hits + coalesced) as f64 / total as f64),
            ..ViewCacheCounts::default()
        }
    }

    /// With what the rounds did to cached responses.
    pub fn across_rounds(
        self,
        kept: u64,
        updated: u64,
        dropped_changed: u64,
        dropped_undecided: u64,
    ) -> ViewCacheCounts {
        ViewCacheCounts {
            kept,
            updated,
            dropped_changed,
            dropped_undecided,
            ..self
        }
    }
}

/// What `GET /metrics` reads from elsewhere when it is scraped.
pub struct Scrape<'a> {
    pub freshness: &'a [ViewFreshness],
    pub cache: &'a ResponseCacheFigures,
    /// Where data reads go now (None while they are refused).
    pub serving: Option<Server>,
    /// The replica's state, when one is configured.
    pub replica: Option<&'a ReplicaStatus>,
}

/// Roles are the policy's: a bounded set.
fn role_label(role: &str) -> Vec<Label> {
    vec![Label::new("role", role.to_owned())]
}

fn view_label(view: ViewName) -> Vec<Label> {
    vec![Label::new("view", view.as_str())]
}

impl Metrics {
    fn counter(&self, name: &'static str, labels: Vec<Label>) -> metrics::Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> metrics::Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> metrics::Histogram {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    pub fn record_request(
        &self,
        route: &str,
        method: &Method,
        status: StatusCode,
        latency: Duration,
    ) {
        let route = SharedString::from(route.to_owned());
        let labels = vec![
            Label::new("route", route.clone()),
            Label::new("method", method_name(method)),
            Label::new("status", status_name(status)),
        ];
        self.counter("http_requests_total", labels).increment(1);
        self.histogram(
            "http_request_duration_seconds",
            vec![Label::new("route", route)],
        )
        .record(latency.as_secs_f64());
    }

    pub fn record_role_request(&self, role: &str) {
        self.counter("role_requests_total", role_label(role))
            .increment(1);
    }

    pub fn record_refusal(&self, reason: &'static str) {
        self.record_refusals(reason, 1);
    }

    fn record_refusals(&self, reason: &'static str, count: u64) {
        self.counter("auth_refusals_total", vec![Label::new("reason", reason)])
            .increment(count);
    }

    pub fn record_exported_rows(&self, role: &str, rows: i64) {
        self.counter("exported_rows_total", role_label(role))
            .increment(rows.max(0) as u64);
    }

    pub fn record_refresh(&self, refresh: RefreshObservation) {
        let labels = vec![
            Label::new("view", refresh.view.as_str()),
            Label::new("trigger", refresh.trigger),
            Label::new("status", refresh.status),
        ];
        self.counter("view_refreshes_total", labels).increment(1);
        if refresh.status == "error" {
            self.counter("view_refresh_failures_total", view_label(refresh.view))
                .increment(1);
        }
        if refresh.status == "skipped" {
            return;
        }
        if CHANGE_TRIGGERS.contains(&refresh.trigger) {
            self.counter("refresh_notification_refreshes_total", vec![])
                .increment(1);
        }
        self.histogram("view_refresh_duration_seconds", view_label(refresh.view))
            .record(refresh.took.as_secs_f64());
        if let Some(rows) = refresh.rows_changed {
            self.counter("view_rows_changed_total", view_label(refresh.view))
                .increment(rows.max(0) as u64);
        }
    }

    /// One incremental apply recomputed this many companies.
    pub fn record_apply(&self, companies: i64) {
        self.counter("incremental_companies_applied_total", vec![])
            .increment(companies.max(0) as u64);
    }

    /// A request with `Prefer: min-freshness=now` waited `waited`, and got its data (`covered`) or
    /// a 503.
    pub fn record_own_writes_wait(&self, covered: bool, waited: Duration) {
        let outcome = OWN_WRITES_OUTCOMES[usize::from(!covered)];
        self.counter(
            "read_your_writes_total",
            vec![Label::new("outcome", outcome)],
        )
        .increment(1);
        self.histogram("read_your_writes_wait_seconds", vec![])
            .record(waited.as_secs_f64());
    }

    pub fn record_notification(&self) {
        self.counter("refresh_notifications_total", vec![])
            .increment(1);
    }

    /// Drains the histograms' buffered samples: call it now and then (rendering does it too), so
    /// that an instance nobody scrapes keeps bounded memory.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text: what this instance recorded, and what `scrape` reads now.
    pub fn render(&self, scrape: &Scrape<'_>) -> String {
        self.set_freshness(scrape.freshness);
        self.set_response_cache(scrape.cache);
        self.set_reads(scrape.serving, scrape.replica);
        // The exporter separates metric families by blank lines (which the format allows); one line
        // per sample or comment is what the tests and the README show.
        let text = self.handle.render();
        let mut lines = String::with_capacity(text.len());
        for line in text.lines().filter(|line| !line.is_empty()) {
            lines.push_str(line);
            lines.push('\n');
        }
        lines
    }

    fn set_freshness(&self, freshness: &[ViewFreshness]) {
        for view in freshness {
            if let Some(mode) = view.mode {
                for each in [Mode::Refresh, Mode::Incremental] {
                    let labels = vec![
                        Label::new("view", view.view.as_str()),
                        Label::new("mode", each.as_str()),
                    ];
                    self.gauge("view_maintenance_mode", labels)
                        .set(f64::from(u8::from(each == mode)));
                }
            }
            if let Some(at) = view.last_success_unix {
                self.gauge("view_last_success_timestamp_seconds", view_label(view.view))
                    .set(at);
            }
            if let Some(age) = view.age_seconds {
                self.gauge("view_data_age_seconds", view_label(view.view))
                    .set(age);
            }
            self.set_work(view.view, view.work.as_ref());
        }
    }

    /// The work gauges of one view: set to 0 when none runs, so that a finished one does not linger.
    fn set_work(&self, view: ViewName, work: Option<&WorkGauges>) {
        for kind in WORK_KINDS {
            let labels = vec![Label::new("view", view.as_str()), Label::new("kind", kind)];
            let running = work.is_some_and(|w| w.kind == kind);
            self.gauge("view_work_in_progress", labels)
                .set(f64::from(u8::from(running)));
        }
        let figure = |value: Option<i64>| value.unwrap_or(0) as f64;
        self.gauge("view_work_done", view_label(view))
            .set(figure(work.and_then(|w| w.done)));
        self.gauge("view_work_total", view_label(view))
            .set(figure(work.and_then(|w| w.total)));
        self.gauge("view_work_chunks", view_label(view))
            .set(figure(work.and_then(|w| w.chunks)));
        self.gauge("view_work_rows", view_label(view))
            .set(figure(work.and_then(|w| w.rows)));
    }

    fn set_response_cache(&self, cache: &ResponseCacheFigures) {
        for (view, counts) in cache.per_view.iter() {
            self.counter("response_cache_hits_total", view_label(view))
                .absolute(counts.hits);
            self.counter("response_cache_misses_total", view_label(view))
                .absolute(counts.misses);
            self.counter("response_cache_coalesced_total", view_label(view))
                .absolute(counts.coalesced);
            for (how, count) in [("unchanged", counts.kept), ("updated", counts.updated)] {
                let labels = vec![Label::new("view", view.as_str()), Label::new("how", how)];
                self.counter("response_cache_kept_total", labels)
                    .absolute(count);
            }
            for (reason, count) in [
                ("changed", counts.dropped_changed),
                ("undecided", counts.dropped_undecided),
            ] {
                let labels = vec![
                    Label::new("view", view.as_str()),
                    Label::new("reason", reason),
                ];
                self.counter("response_cache_dropped_total", labels)
                    .absolute(count);
            }
        }
        self.counter("response_cache_evictions_total", vec![])
            .absolute(cache.evictions);
        self.gauge("response_cache_bytes", vec![])
            .set(cache.bytes as f64);
        self.gauge("response_cache_entries", vec![])
            .set(cache.entries as f64);
        self.gauge("response_cache_enabled", vec![])
            .set(f64::from(u8::from(cache.enabled)));
    }

    fn set_reads(&self, serving: Option<Server>, replica: Option<&ReplicaStatus>) {
        for server in [Server::Primary, Server::Replica] {
            self.gauge(
                "reads_served_from",
                vec![Label::new("server", server.as_str())],
            )
            .set(f64::from(u8::from(serving == Some(server))));
        }
        let Some(replica) = replica else {
            return;
        };
        self.gauge("replica_up", vec![])
            .set(f64::from(u8::from(replica.reachable)));
        self.gauge("replica_lag_seconds", vec![])
            .set(replica.lag_seconds.unwrap_or(f64::NAN));
        self.gauge("replica_max_lag_seconds", vec![])
            .set(replica.max_lag_seconds);
        self.counter("replica_fallbacks_total", vec![])
            .absolute(replica.fallbacks);
    }
}

/// The methods the API answers, and a bounded label for any other.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// A status as its three digits, without allocating for the usual ones.
fn status_name(status: StatusCode) -> SharedString {
    match status.as_u16() {
        200 => SharedString::const_str("200"),
        202 => SharedString::const_str("202"),
        304 => SharedString::const_str("304"),
        400 => SharedString::const_str("400"),
        401 => SharedString::const_str("401"),
        403 => SharedString::const_str("403"),
        404 => SharedString::const_str("404"),
        429 => SharedString::const_str("429"),
        500 => SharedString::const_str("500"),
        503 => SharedString::const_str("503"),
        other => SharedString::from(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(metrics: &Metrics) -> String {
        metrics.render(&Scrape {
            freshness: &[],
            cache: &ResponseCacheFigures::default(),
            serving: Some(Server::Primary),
            replica: None,
        })
    }

    #[test]
    fn histograms_are_cumulative_and_rendered_with_inf() {
        let metrics = Metrics::default();
        let get = Method::GET;
        metrics.record_request("/prospects", &get, StatusCode::OK, Duration::from_millis(3));
        metrics.record_request(
            "/prospects",
            &get,
            StatusCode::OK,
            Duration::from_millis(30),
        );
        let text = render(&metrics);
        for line in [
            "http_requests_total{route=\"/prospects\",method=\"GET\",status=\"200\"} 2",
            "http_request_duration_seconds_bucket{route=\"/prospects\",le=\"0.005\"} 1",
            "http_request_duration_seconds_bucket{route=\"/prospects\",le=\"0.05\"} 2",
            "http_request_duration_seconds_bucket{route=\"/prospects\",le=\"+Inf\"} 2",
            "# TYPE http_requests_total counter",
            "# HELP http_requests_total HTTP requests by route template, method and status.",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
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
        let text = render(&metrics);
        assert!(text.contains("view_refresh_failures_total{view=\"company_summary_view\"} 1"));
        assert!(text.contains("view_refresh_failures_total{view=\"company_prospect_view\"} 0"));
    }

    #[test]
    fn every_metric_is_described() {
        let metrics = Metrics::default();
        let text = render(&metrics);
        for (name, _, _) in METRICS.iter().filter(|(name, _, _)| {
            // Recorded or set only once there is something to say.
            !name.starts_with("replica_")
                && !name.starts_with("view_")
                && !name.starts_with("http_")
                && !name.starts_with("role_")
                && !name.starts_with("exported_")
                && *name != "read_your_writes_wait_seconds"
        }) {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
    }
}
