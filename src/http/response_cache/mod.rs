//! Whole data responses cached per instance, each labelled with the generation of the data it
//! shows: the refresh log id behind its freshness headers. A request is answered from the cache
//! when its entry's generation is the view's current one. When the view has moved on, an entry
//! survives only if every round since changed no row it could show (`shows`: its filters, its
//! page's key range, its id, its counts; the rows each round deleted and inserted, `rounds`): it
//! is then labelled with the new generation, or, when only a total or a count moved, updated from
//! the changed rows. Anything else is rendered anew: a full refresh or a build (which record no
//! changed rows), an entry older than the rounds kept, a change Rust cannot decide. So an entry is
//! only ever served for a generation whose data it shows, on every instance, whichever applied the
//! round, with no invalidation message.
//!
//! Cached: the body (gzip-compressed when the client accepts gzip, so a hot compressed response costs
//! no compression), `Link` and the ETag, which is derived from the body: a response that survives
//! a round keeps its ETag, and a client revalidating it gets a 304 across rounds. Not cached: the
//! freshness headers, which the gate computes per response, and failures.
//!
//! The cache is moka's (TinyLFU admission, LRU eviction, bounded by a byte weigher) rather than our
//! own: concurrent, well kept, and its per-key compute is the single flight that makes identical
//! concurrent misses (and the survival check of one entry) wait for one query.

mod rounds;
pub mod shows;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use sqlx::PgPool;

use self::rounds::Rounds;
use self::shows::{After, Shows, Why};
use super::error::ApiError;
use crate::metrics::{ResponseCacheFigures, ViewCacheCounts};
use crate::views::{PerView, ViewName};

/// What a handler renders for a request: the JSON body, for a list with a next page `Link`, and
/// what the body shows (none: it cannot survive a round).
pub struct Rendered {
    pub json: Vec<u8>,
    pub link: Option<HeaderValue>,
    pub shows: Option<Arc<dyn Shows>>,
}

/// The content coding of a cached body: part of the key, so that a client that does not accept gzip
/// never gets a gzip body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Coding {
    Identity,
    Gzip,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    view: ViewName,
    coding: Coding,
    /// The endpoint and its parsed, normalized parameters (cursor included), and the caller's role.
    request: String,
}

#[derive(Clone)]
struct Entry {
    /// The generation whose data it shows.
    generation: i64,
    body: Bytes,
    link: Option<HeaderValue>,
    gzipped: bool,
    /// The bytes the body's buffer holds (its capacity, which `Bytes` keeps): what the bound counts.
    allocated: usize,
    etag: HeaderValue,
    shows: Option<Arc<dyn Shows>>,
}

/// The generation of an entry whose render a round overtook: older than any, it is never served
/// again.
const UNLABELLED: i64 = i64::MIN;

/// What responses are read from: the pool a round's changes are read through, and the view's
/// generation as it stands now, read again after each render to label it truthfully.
pub trait ReadFrom: Sync {
    fn pool(&self) -> &PgPool;

    fn generation_now(
        &self,
        view: ViewName,
    ) -> impl Future<Output = Result<Option<i64>, ApiError>> + Send;
}

impl ReadFrom for PgPool {
    fn pool(&self) -> &PgPool {
        self
    }

    /// The log id of the view's last successful refresh.
    async fn generation_now(&self, view: ViewName) -> Result<Option<i64>, ApiError> {
        let generation = sqlx::query_scalar!(
            "SELECT log_id FROM last_successful_refreshes() WHERE view_name = $1",
            view.as_str()
        )
        .fetch_one(self)
        .await?;
        Ok(generation)
    }
}

/// Bodies smaller than this are sent as they are (tower-http's compression uses the same bound).
const MIN_GZIP_BYTES: usize = 32;

/// Bytes an entry costs beyond its body and key: moka's own bookkeeping and ours, roughly.
const ENTRY_OVERHEAD_BYTES: usize = 200;

/// Per view: how responses were served.
#[derive(Default)]
struct Counters {
    /// From the cache, at the entry's own generation.
    hits: AtomicU64,
    /// Rendered (a query ran).
    misses: AtomicU64,
    /// By waiting for an identical request's render.
    coalesced: AtomicU64,
    /// Kept across rounds that changed nothing they show, or updated by them.
    kept: AtomicU64,
    updated: AtomicU64,
    /// Dropped by a round: a changed row in it, or one Rust could not decide (or rounds that
    /// recorded no rows, or no longer kept).
    dropped_changed: AtomicU64,
    dropped_undecided: AtomicU64,
}

pub struct ResponseCache {
    /// None: `RESPONSE_CACHE_BYTES=0`, every request renders its response.
    entries: Option<Cache<Arc<Key>, Entry>>,
    rounds: Rounds,
    /// Whether the database orders text bytewise (a C collation), as Rust does: then text keys and
    /// facet values compare in Rust as in SQL.
    bytewise: std::sync::atomic::AtomicBool,
    counters: PerView<Counters>,
    evictions: Arc<AtomicU64>,
}

/// How a response came to be served, for the counters.
enum Served {
    Hit,
    Rendered,
    Coalesced,
    Kept,
    Updated,
}

impl ResponseCache {
    pub fn new(max_bytes: u64) -> ResponseCache {
        let evictions = Arc::new(AtomicU64::new(0));
        let entries = (max_bytes > 0).then(|| {
            let evicted = evictions.clone();
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &Arc<Key>, entry: &Entry| {
                    let bytes = key.request.len() + entry.allocated + ENTRY_OVERHEAD_BYTES;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .eviction_listener(move |_, _, cause| {
                    if cause == RemovalCause::Size {
                        evicted.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build()
        });
        ResponseCache {
            entries,
            rounds: Rounds::new(max_bytes as usize),
            bytewise: std::sync::atomic::AtomicBool::new(false),
            counters: Default::default(),
            evictions,
        }
    }

    /// Readies the cache to serve `generation` of `view` read through `pool`: loads the rounds
    /// that lead to it, so that the first requests of that generation do not wait for them.
    pub async fn prepare(
        &self,
        pool: &PgPool,
        view: ViewName,
        generation: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        match (&self.entries, generation) {
            (Some(_), Some(generation)) => self.rounds.load_up_to(pool, view, generation).await,
            _ => Ok(()),
        }
    }

    /// Tells the cache whether the database's collation orders text bytewise (`C`, `POSIX`,
    /// `C.UTF-8`); until told, it assumes not, and drops what a text order would decide.
    pub fn set_bytewise(&self, bytewise: bool) {
        self.bytewise.store(bytewise, Ordering::Relaxed);
    }

    /// The response for `request` at `generation` of `view`: from the cache (kept across the rounds
    /// since its own generation when they changed nothing it shows), or rendered by `render` (once
    /// for all identical concurrent requests) and cached. A 304 when `If-None-Match` names its
    /// ETag. Without a generation (a view populated outside the refresh log) nothing is cached:
    /// there would be no way to tell when it changes. `source` is the server the generation was
    /// read from: the rounds' changes are read there, and a render that a round overtook answers
    /// its own request only.
    pub async fn respond<F>(
        &self,
        view: ViewName,
        generation: Option<i64>,
        request: &str,
        request_headers: &HeaderMap,
        source: &impl ReadFrom,
        render: F,
    ) -> Result<Response, ApiError>
    where
        F: Future<Output = Result<Rendered, ApiError>> + Send,
    {
        let (Some(entries), Some(generation)) = (&self.entries, generation) else {
            // The compression layer compresses this one as it does every other response.
            let entry = Entry::identity(render.await?, generation.unwrap_or(0), request);
            return Ok(response(entry, request_headers, generation.is_some()));
        };
        let coding = if accepts_gzip(request_headers) {
            Coding::Gzip
        } else {
            Coding::Identity
        };
        let key = Arc::new(Key {
            view,
            coding,
            request: request.to_owned(),
        });
        let counters = &self.counters[view];
        let pending = std::sync::Mutex::new(Some(render));
        let take_render = || pending.lock().expect("not poisoned").take();
        match entries.get(&key).await {
            Some(hit) if hit.generation == generation => {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(response(hit, request_headers, true));
            }
            Some(cached) if cached.generation < generation => {
                if let Some((entry, served)) = self
                    .advanced(entries, &key, view, generation, source.pool())
                    .await?
                {
                    self.count(view, served);
                    return Ok(response(entry, request_headers, true));
                }
            }
            Some(_) => {
                // The request reads an older generation than the entry shows (another server's
                // freshness lags): render it, and keep the newer entry.
                return self
                    .uncached(view, take_render(), generation, request, request_headers)
                    .await;
            }
            None => {}
        }
        let mut rendered_here = false;
        let entry = entries
            .entry(key)
            .or_try_insert_with(async {
                rendered_here = true;
                let render = take_render().expect("rendered once");
                let rendered = render.await?;
                let mut entry = match coding {
                    Coding::Gzip => Entry::gzip(rendered, generation, request),
                    Coding::Identity => Entry::identity(rendered, generation, request),
                };
                let now = source.generation_now(view).await?;
                if now != Some(generation) {
                    // A round committed while it was rendered (or the freshness read was another
                    // instance's older one): its statements may each show any snapshot up to the
                    // newest. If the rounds since changed nothing it shows, every one of those
                    // snapshots shows the same, its label's too (and a request of the newest finds
                    // it kept); otherwise it answers this request only.
                    let kept = match now {
                        Some(now) if now > generation => {
                            self.unchanged_up_to(view, request, &entry, now, source.pool())
                                .await?
                        }
                        _ => false,
                    };
                    if !kept {
                        entry.generation = UNLABELLED;
                        entry.shows = None;
                    }
                }
                Ok::<_, ApiError>(entry)
            })
            .await
            .map_err(ApiError::shared)?
            .into_value();
        if entry.generation == UNLABELLED && rendered_here {
            self.count(view, Served::Rendered);
            return Ok(response(entry, request_headers, true));
        }
        if entry.generation != generation {
            // Another generation's entry came in between: this request renders its own.
            return self
                .uncached(view, take_render(), generation, request, request_headers)
                .await;
        }
        self.count(
            view,
            if rendered_here {
                Served::Rendered
            } else {
                Served::Coalesced
            },
        );
        Ok(response(entry, request_headers, true))
    }

    /// Whether the rounds up to `now` changed nothing a fresh render shows.
    async fn unchanged_up_to(
        &self,
        view: ViewName,
        request: &str,
        entry: &Entry,
        now: i64,
        pool: &PgPool,
    ) -> Result<bool, sqlx::Error> {
        let advanced = self.advance(view, request, entry, now, pool).await?;
        Ok(matches!(advanced, Ok((_, Served::Kept))))
    }

    /// The entry at `key` brought to `generation`, once for all concurrent requests (moka's
    /// compute): kept or updated, or dropped (`None`: the request renders it anew).
    async fn advanced(
        &self,
        entries: &Cache<Arc<Key>, Entry>,
        key: &Arc<Key>,
        view: ViewName,
        generation: i64,
        pool: &PgPool,
    ) -> Result<Option<(Entry, Served)>, ApiError> {
        let mut served = Served::Hit;
        let computed = entries
            .entry(key.clone())
            .and_try_compute_with(|cached| {
                let served = &mut served;
                async move {
                    let Some(cached) = cached.map(|entry| entry.into_value()) else {
                        return Ok(Op::Nop);
                    };
                    if cached.generation != generation {
                        if cached.generation > generation {
                            return Ok(Op::Nop);
                        }
                        match self
                            .advance(view, &key.request, &cached, generation, pool)
                            .await?
                        {
                            Ok((entry, how)) => {
                                *served = how;
                                return Ok(Op::Put(entry));
                            }
                            Err(why) => {
                                self.count_dropped(view, why);
                                return Ok(Op::Remove);
                            }
                        }
                    }
                    Ok::<_, sqlx::Error>(Op::Nop) // another request brought it here meanwhile
                }
            })
            .await?;
        Ok(match computed {
            CompResult::Inserted(entry)
            | CompResult::ReplacedWith(entry)
            | CompResult::Unchanged(entry) => {
                let entry = entry.into_value();
                (entry.generation == generation).then_some((entry, served))
            }
            CompResult::Removed(_) | CompResult::StillNone(_) => None,
        })
    }

    /// A response rendered for this request alone, not cached.
    async fn uncached<F>(
        &self,
        view: ViewName,
        render: Option<F>,
        generation: i64,
        request: &str,
        request_headers: &HeaderMap,
    ) -> Result<Response, ApiError>
    where
        F: Future<Output = Result<Rendered, ApiError>> + Send,
    {
        let render = render.ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("a response's render was taken twice"))
        })?;
        self.counters[view].misses.fetch_add(1, Ordering::Relaxed);
        let entry = Entry::identity(render.await?, generation, request);
        Ok(response(entry, request_headers, true))
    }

    fn count(&self, view: ViewName, served: Served) {
        let counters = &self.counters[view];
        match served {
            Served::Hit => &counters.hits,
            Served::Rendered => &counters.misses,
            Served::Coalesced => &counters.coalesced,
            Served::Kept => &counters.kept,
            Served::Updated => &counters.updated,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// `cached` brought from its generation to `generation` through the rounds between: kept as it
    /// is, or updated; `Err(why)` when one of them changed, or may have changed, what it shows.
    async fn advance(
        &self,
        view: ViewName,
        request: &str,
        cached: &Entry,
        generation: i64,
        pool: &PgPool,
    ) -> Result<Result<(Entry, Served), Why>, sqlx::Error> {
        let Some(shows) = &cached.shows else {
            return Ok(Err(Why::Undecided));
        };
        let Some(rounds) = self
            .rounds
            .between(pool, view, cached.generation, generation)
            .await?
        else {
            return Ok(Err(Why::Undecided));
        };
        let bytewise = self.bytewise.load(Ordering::Relaxed);
        let mut shows = shows.clone();
        let mut json: Option<Vec<u8>> = None;
        for round in &rounds {
            let after = {
                let body = || match &json {
                    Some(json) => json.clone(),
                    None => cached.identity_json(),
                };
                shows.after(round, &body, bytewise)
            };
            match after {
                After::Unchanged => {}
                After::Updated {
                    json: updated,
                    shows: now,
                } => {
                    json = Some(updated);
                    shows = now;
                }
                After::Dropped(why) => return Ok(Err(why)),
            }
        }
        Ok(Ok(match json {
            None => (
                Entry {
                    generation,
                    ..cached.clone()
                },
                Served::Kept,
            ),
            Some(json) => {
                let rendered = Rendered {
                    json,
                    link: cached.link.clone(),
                    shows: Some(shows),
                };
                let entry = if cached.gzipped {
                    Entry::gzip(rendered, generation, request)
                } else {
                    Entry::identity(rendered, generation, request)
                };
                (entry, Served::Updated)
            }
        }))
    }

    fn count_dropped(&self, view: ViewName, why: Why) {
        let counters = &self.counters[view];
        match why {
            Why::Changed => &counters.dropped_changed,
            Why::Undecided => &counters.dropped_undecided,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn figures(&self) -> ResponseCacheFigures {
        ResponseCacheFigures {
            enabled: self.entries.is_some(),
            per_view: PerView::from_fn(|view| {
                let c = &self.counters[view];
                let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                ViewCacheCounts::new(
                    load(&c.hits) + load(&c.kept) + load(&c.updated),
                    load(&c.misses),
                    load(&c.coalesced),
                )
                .across_rounds(
                    load(&c.kept),
                    load(&c.updated),
                    load(&c.dropped_changed),
                    load(&c.dropped_undecided),
                )
            }),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.entries.as_ref().map_or(0, Cache::weighted_size),
            entries: self.entries.as_ref().map_or(0, Cache::entry_count),
        }
    }

    /// Applies moka's pending bookkeeping (evictions, sizes) now; tests use it to read exact figures.
    pub async fn settle(&self) {
        if let Some(entries) = &self.entries {
            entries.run_pending_tasks().await;
        }
    }
}

impl Entry {
    fn identity(rendered: Rendered, generation: i64, request: &str) -> Entry {
        Entry {
            generation,
            etag: etag(request, &rendered.json),
            allocated: rendered.json.capacity(),
            body: Bytes::from(rendered.json),
            link: rendered.link,
            gzipped: false,
            shows: rendered.shows,
        }
    }

    fn gzip(rendered: Rendered, generation: i64, request: &str) -> Entry {
        if rendered.json.len() < MIN_GZIP_BYTES {
            return Entry::identity(rendered, generation, request);
        }
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(rendered.json.len() / 4),
            flate2::Compression::default(),
        );
        encoder
            .write_all(&rendered.json)
            .expect("writing to a Vec cannot fail");
        let gzipped = encoder.finish().expect("writing to a Vec cannot fail");
        Entry {
            generation,
            etag: etag(request, &rendered.json),
            allocated: gzipped.capacity(),
            body: Bytes::from(gzipped),
            link: rendered.link,
            gzipped: true,
            shows: rendered.shows,
        }
    }

    /// The body as JSON (decompressed when it is kept gzipped).
    fn identity_json(&self) -> Vec<u8> {
        if !self.gzipped {
            return self.body.to_vec();
        }
        let mut json = Vec::with_capacity(self.body.len() * 4);
        match flate2::read::GzDecoder::new(&self.body[..]).read_to_end(&mut json) {
            Ok(_) => json,
            Err(_) => Vec::new(), // our own gzip: cannot fail; an empty body updates nothing
        }
    }
}

/// The ETag of a JSON body for `request` (the endpoint, its parameters and the caller's role, so
/// that no two roles' responses share one): what it shows, whatever generation served it, so that
/// a response kept across rounds keeps its ETag. (A hash, not a digest: an ETag only has to change
/// when the body does, and this costs a fraction of rendering the body.)
fn etag(request: &str, json: &[u8]) -> HeaderValue {
    let mut hasher = std::hash::DefaultHasher::new();
    request.hash(&mut hasher);
    json.hash(&mut hasher);
    let first = hasher.finish();
    json.len().hash(&mut hasher);
    let second = hasher.finish();
    HeaderValue::from_str(&format!("\"{first:016x}{second:016x}\"")).expect("hex is ASCII")
}

/// The response: the body with its headers, or a 304 when the request's `If-None-Match` names its
/// ETag. `tagged`: whether it carries an ETag (not without a generation, whose changes nothing
/// could tell).
fn response(entry: Entry, request: &HeaderMap, tagged: bool) -> Response {
    let vary = HeaderValue::from_static("accept, accept-encoding");
    if tagged && if_none_match_matches(request, &entry.etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ETAG, entry.etag);
        // As on the 200 it revalidates: a shared cache must keep one copy per content coding.
        headers.insert(header::VARY, vary);
        return response;
    }
    let mut response = Response::new(Body::from(entry.body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Accept: list endpoints answer CSV to `text/csv`; Accept-Encoding: gzip when accepted.
    headers.insert(header::VARY, vary);
    if tagged {
        headers.insert(header::ETAG, entry.etag);
    }
    if entry.gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if let Some(link) = entry.link {
        headers.insert(header::LINK, link);
    }
    response
}

/// `If-None-Match` holds `*` or a list of (possibly weak) entity tags.
pub fn if_none_match_matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| {
            value
                .split(',')
                .map(str::trim)
                .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
        })
}

/// Whether `Accept-Encoding` accepts gzip (by name or `*`) with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let zero_quality = parts.any(|param| {
                param
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !zero_quality
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn gzip_is_accepted_by_name_or_star_unless_its_quality_is_zero() {
        assert!(accepts_gzip(&accept("gzip")));
        assert!(accepts_gzip(&accept("br, GZIP;q=0.5")));
        assert!(accepts_gzip(&accept("*")));
        assert!(!accepts_gzip(&accept("gzip;q=0")));
        assert!(!accepts_gzip(&accept("br, deflate")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    fn rendered(json: &str) -> Rendered {
        Rendered {
            json: json.as_bytes().to_vec(),
            link: None,
            shows: None,
        }
    }

    /// A source at a settled generation, whose pool never connects: these responses show nothing
    /// a round's changes are read for.
    struct Settled {
        pool: PgPool,
        generation: i64,
    }

    impl Settled {
        fn at(generation: i64) -> Self {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .connect_lazy("postgres://nobody@127.0.0.1:1/none")
                .expect("a valid URL");
            Settled { pool, generation }
        }
    }

    impl ReadFrom for Settled {
        fn pool(&self) -> &PgPool {
            &self.pool
        }

        async fn generation_now(&self, _view: ViewName) -> Result<Option<i64>, ApiError> {
            Ok(Some(self.generation))
        }
    }

    /// What `cache` answers `request` (with `headers`) of `view` at a settled `generation` with,
    /// `render` being what a render gives.
    async fn answer(
        cache: &ResponseCache,
        (view, generation): (ViewName, i64),
        request: &str,
        headers: &HeaderMap,
        render: Result<Rendered, ApiError>,
    ) -> Result<Response, ApiError> {
        let source = Settled::at(generation);
        let render = async move { render };
        cache
            .respond(view, Some(generation), request, headers, &source, render)
            .await
    }

    async fn body(response: Response) -> Bytes {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
    }

    /// The body `cache` answers `request` of `generation` with, `json` being what a render gives.
    async fn served(
        cache: &ResponseCache,
        generation: i64,
        request: &str,
        json: &'static str,
    ) -> Bytes {
        let at = (ViewName::CompanyProspectView, generation);
        let headers = HeaderMap::new();
        body(
            answer(cache, at, request, &headers, Ok(rendered(json)))
                .await
                .unwrap(),
        )
        .await
    }

    #[tokio::test]
    async fn one_render_per_key_and_none_across_generations_codings_or_requests() {
        let cache = ResponseCache::new(1 << 20);
        let view = ViewName::CompanyProspectView;
        assert_eq!(served(&cache, 1, "/a", "{\"g\":1}").await, "{\"g\":1}");
        assert_eq!(
            served(&cache, 1, "/a", "{\"g\":9}").await,
            "{\"g\":1}",
            "the same request and generation is a hit"
        );
        assert_eq!(
            served(&cache, 2, "/a", "{\"g\":2}").await,
            "{\"g\":2}",
            "a new generation is a miss for a response that says nothing of what it shows"
        );
        assert_eq!(served(&cache, 2, "/b", "{\"b\":2}").await, "{\"b\":2}");
        let padded = rendered("{\"g\":2,\"padding\":\"....................................\"}");
        let gzip = answer(&cache, (view, 2), "/a", &accept("gzip"), Ok(padded))
            .await
            .unwrap();
        assert_eq!(gzip.headers()[header::CONTENT_ENCODING], "gzip");
        cache.settle().await;
        let figures = cache.figures();
        let counts = &figures.per_view[view];
        assert_eq!((counts.hits, counts.misses), (1, 4));
        assert_eq!(counts.dropped_undecided, 1, "generation 1's /a");
        assert_eq!(figures.entries, 3, "generation 1's /a was replaced by 2's");
    }

    #[tokio::test]
    async fn the_etag_is_the_bodys_and_names_a_304() {
        let cache = ResponseCache::new(1 << 20);
        let view = ViewName::CompanySummaryView;
        let same = || Ok(rendered("{\"same\":true}"));
        let first = answer(&cache, (view, 1), "/e", &HeaderMap::new(), same())
            .await
            .unwrap();
        let etag = first.headers()[header::ETAG].clone();
        let mut revalidating = HeaderMap::new();
        revalidating.insert(header::IF_NONE_MATCH, etag.clone());
        let again = answer(&cache, (view, 3), "/e", &revalidating, same())
            .await
            .unwrap();
        assert_eq!(
            again.status(),
            StatusCode::NOT_MODIFIED,
            "the same body, rendered anew"
        );
        assert_eq!(again.headers()[header::ETAG], etag);
        let other = rendered("{\"same\":false}");
        let changed = answer(&cache, (view, 4), "/e", &revalidating, Ok(other))
            .await
            .unwrap();
        assert_eq!(changed.status(), StatusCode::OK);
        assert_ne!(changed.headers()[header::ETAG], etag);
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let cache = ResponseCache::new(1 << 20);
        let view = ViewName::CompanySummaryView;
        let headers = HeaderMap::new();
        let failed = answer(
            &cache,
            (view, 1),
            "/c",
            &headers,
            Err(ApiError::QueryTimeout),
        )
        .await;
        let status = axum::response::IntoResponse::into_response(failed.unwrap_err()).status();
        assert_eq!(status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        let ok = answer(&cache, (view, 1), "/c", &headers, Ok(rendered("[]")))
            .await
            .unwrap();
        assert_eq!(body(ok).await, "[]");
    }

    #[tokio::test]
    async fn a_render_a_round_overtook_answers_its_request_only() {
        let cache = ResponseCache::new(1 << 20);
        let view = ViewName::CompanyProspectView;
        // Each request reads generation 5; by the time its render ends, the source is at 6.
        let overtaken = Settled::at(6);
        let render_at_5 = async |json: &'static str| {
            let render = async move { Ok(rendered(json)) };
            let headers = HeaderMap::new();
            let response = cache.respond(view, Some(5), "/o", &headers, &overtaken, render);
            response.await.unwrap()
        };
        assert_eq!(render_at_5("{\"r\":1}").await.status(), StatusCode::OK);
        assert_eq!(
            body(render_at_5("{\"r\":2}").await).await,
            "{\"r\":2}",
            "the overtaken render was not served again"
        );
        assert_eq!(served(&cache, 6, "/o", "{\"r\":3}").await, "{\"r\":3}");
        assert_eq!(served(&cache, 6, "/o", "{\"r\":4}").await, "{\"r\":3}");
        assert_eq!(cache.figures().per_view[view].hits, 1);
    }

    #[tokio::test]
    async fn identical_concurrent_misses_wait_for_one_render() {
        let cache = Arc::new(ResponseCache::new(1 << 20));
        let renders = Arc::new(AtomicU64::new(0));
        let requests: Vec<_> = (0..8)
            .map(|_| {
                let (cache, renders) = (cache.clone(), renders.clone());
                tokio::spawn(async move {
                    let render = async move {
                        renders.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        Ok(rendered("{}"))
                    };
                    let view = ViewName::ProspectSearchView;
                    let source = Settled::at(7);
                    cache
                        .respond(view, Some(7), "/s", &HeaderMap::new(), &source, render)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().status(), axum::http::StatusCode::OK);
        }
        assert_eq!(renders.load(Ordering::Relaxed), 1);
        let counts = &cache.figures().per_view[ViewName::ProspectSearchView];
        assert_eq!((counts.misses, counts.coalesced + counts.hits), (1, 7));
    }
}
