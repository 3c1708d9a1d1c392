//! Whole data responses cached per instance, keyed by the request and by the generation of the data
//! it reads: the refresh log id behind its freshness headers. Between two refreshes (or incremental
//! rounds) a read model does not change, so a request has the same body until its view's generation
//! moves; then its key changes. An entry is never served for a generation other than its own, so a
//! refresh on any instance can never leave a stale body behind, without any invalidation message.
//! Entries of older generations are dropped as soon as a newer one is seen.
//!
//! Cached: the body (gzip-compressed when the client accepts gzip, so a hot compressed response costs
//! no compression) and `Link`. Not cached: the freshness headers and the ETag, which the gate computes
//! per response, and failures.
//!
//! The cache is moka's (TinyLFU admission, LRU eviction, bounded by a byte weigher) rather than our
//! own: concurrent, well kept, and its `or_try_insert_with` is the single flight that makes identical
//! concurrent misses wait for one query.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use moka::future::Cache;
use moka::notification::RemovalCause;

use super::error::ApiError;
use crate::metrics::{ResponseCacheFigures, ViewCacheCounts};
use crate::views::{PerView, ViewName};

/// What a handler renders for a request: the JSON body and, for a list with a next page, `Link`.
pub struct Rendered {
    pub json: Vec<u8>,
    pub link: Option<HeaderValue>,
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
    generation: i64,
    coding: Coding,
    /// The endpoint and its parsed, normalized parameters (cursor included), as the ETag uses them.
    request: String,
}

#[derive(Clone)]
struct Entry {
    body: Bytes,
    link: Option<HeaderValue>,
    gzipped: bool,
    /// The bytes the body's buffer holds (its capacity, which `Bytes` keeps): what the bound counts.
    allocated: usize,
}

/// Bodies smaller than this are sent as they are (tower-http's compression uses the same bound).
const MIN_GZIP_BYTES: usize = 32;

/// Bytes an entry costs beyond its body and key: moka's own bookkeeping and ours, roughly.
const ENTRY_OVERHEAD_BYTES: usize = 160;

pub struct ResponseCache {
    /// None: `RESPONSE_CACHE_BYTES=0`, every request renders its response.
    entries: Option<Cache<Arc<Key>, Entry>>,
    /// The newest generation seen per view, to drop the entries of older ones.
    newest: PerView<AtomicI64>,
    /// Per view: requests served from the cache, rendered, and served by waiting for another's render.
    hits: PerView<AtomicU64>,
    misses: PerView<AtomicU64>,
    coalesced: PerView<AtomicU64>,
    evictions: Arc<AtomicU64>,
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
                .support_invalidation_closures()
                .build()
        });
        ResponseCache {
            entries,
            newest: PerView::from_fn(|_| AtomicI64::new(i64::MIN)),
            hits: Default::default(),
            misses: Default::default(),
            coalesced: Default::default(),
            evictions,
        }
    }

    /// The response for `request` at `generation` of `view`: from the cache, or rendered by `render`
    /// (once for all identical concurrent requests) and cached. Without a generation (a view populated
    /// outside the refresh log) nothing is cached: there would be no way to tell when it changes.
    pub async fn respond<F>(
        &self,
        view: ViewName,
        generation: Option<i64>,
        request: &str,
        request_headers: &HeaderMap,
        render: F,
    ) -> Result<Response, ApiError>
    where
        F: Future<Output = Result<Rendered, ApiError>> + Send,
    {
        let (Some(entries), Some(generation)) = (&self.entries, generation) else {
            // The compression layer compresses this one as it does every other response.
            return Ok(response(Entry::identity(render.await?)));
        };
        self.note_generation(entries, view, generation);
        let coding = if accepts_gzip(request_headers) {
            Coding::Gzip
        } else {
            Coding::Identity
        };
        let key = Arc::new(Key {
            view,
            generation,
            coding,
            request: request.to_owned(),
        });
        if let Some(hit) = entries.get(&key).await {
            self.hits[view].fetch_add(1, Ordering::Relaxed);
            return Ok(response(hit));
        }
        let entry = entries
            .entry(key)
            .or_try_insert_with(async move {
                let rendered = render.await?;
                Ok::<_, ApiError>(match coding {
                    Coding::Gzip => Entry::gzip(rendered),
                    Coding::Identity => Entry::identity(rendered),
                })
            })
            .await
            .map_err(ApiError::shared)?;
        let counters = if entry.is_fresh() {
            &self.misses
        } else {
            &self.coalesced
        };
        counters[view].fetch_add(1, Ordering::Relaxed);
        Ok(response(entry.into_value()))
    }

    /// Once a newer generation of a view is seen, the entries of older ones can never be served again:
    /// drop them now rather than when the byte bound pushes them out.
    fn note_generation(&self, entries: &Cache<Arc<Key>, Entry>, view: ViewName, generation: i64) {
        let newest = &self.newest[view];
        if newest.fetch_max(generation, Ordering::Relaxed) < generation {
            // Fails only without support_invalidation_closures(), which the builder sets.
            let _ = entries.invalidate_entries_if(move |key, _| {
                key.view == view && key.generation < generation
            });
        }
    }

    pub fn figures(&self) -> ResponseCacheFigures {
        ResponseCacheFigures {
            enabled: self.entries.is_some(),
            per_view: PerView::from_fn(|view| {
                let count = |counters: &PerView<AtomicU64>| counters[view].load(Ordering::Relaxed);
                ViewCacheCounts::new(
                    count(&self.hits),
                    count(&self.misses),
                    count(&self.coalesced),
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
    fn identity(rendered: Rendered) -> Entry {
        Entry {
            allocated: rendered.json.capacity(),
            body: Bytes::from(rendered.json),
            link: rendered.link,
            gzipped: false,
        }
    }

    fn gzip(rendered: Rendered) -> Entry {
        if rendered.json.len() < MIN_GZIP_BYTES {
            return Entry::identity(rendered);
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
            allocated: gzipped.capacity(),
            body: Bytes::from(gzipped),
            link: rendered.link,
            gzipped: true,
        }
    }
}

fn response(entry: Entry) -> Response {
    let mut response = Response::new(Body::from(entry.body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Accept: list endpoints answer CSV to `text/csv`; Accept-Encoding: gzip when accepted.
    headers.insert(
        header::VARY,
        HeaderValue::from_static("accept, accept-encoding"),
    );
    if entry.gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if let Some(link) = entry.link {
        headers.insert(header::LINK, link);
    }
    response
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
        }
    }

    /// The body `cache` answers `request` of `generation` with, `json` being what a render gives.
    async fn served(
        cache: &ResponseCache,
        generation: i64,
        request: &str,
        json: &'static str,
    ) -> Bytes {
        let view = ViewName::CompanyProspectView;
        let render = async move { Ok(rendered(json)) };
        let response = cache
            .respond(view, Some(generation), request, &HeaderMap::new(), render)
            .await
            .unwrap();
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_render_per_key_and_none_across_generations_codings_or_requests() {
        let cache = ResponseCache::new(1 << 20);
        let view = ViewName::CompanyProspectView;
        let render = |json: &'static str| async move { Ok(rendered(json)) };
        assert_eq!(served(&cache, 1, "/a", "{\"g\":1}").await, "{\"g\":1}");
        assert_eq!(
            served(&cache, 1, "/a", "{\"g\":9}").await,
            "{\"g\":1}",
            "the same request and generation is a hit"
        );
        assert_eq!(
            served(&cache, 2, "/a", "{\"g\":2}").await,
            "{\"g\":2}",
            "a new generation is a miss"
        );
        assert_eq!(served(&cache, 2, "/b", "{\"b\":2}").await, "{\"b\":2}");
        let gzip = cache
            .respond(
                view,
                Some(2),
                "/a",
                &accept("gzip"),
                render("{\"g\":2,\"padding\":\"....................................\"}"),
            )
            .await
            .unwrap();
        assert_eq!(gzip.headers()[header::CONTENT_ENCODING], "gzip");
        cache.settle().await;
        let figures = cache.figures();
        let counts = &figures.per_view[view];
        assert_eq!((counts.hits, counts.misses), (1, 4));
        assert_eq!(
            figures.entries, 3,
            "generation 1's entry was dropped when 2 was seen"
        );
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let cache = ResponseCache::new(1 << 20);
        let view = ViewName::CompanySummaryView;
        let failed = cache
            .respond(view, Some(1), "/c", &HeaderMap::new(), async {
                Err(ApiError::QueryTimeout)
            })
            .await;
        let status = axum::response::IntoResponse::into_response(failed.unwrap_err()).status();
        assert_eq!(status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        let ok = cache
            .respond(view, Some(1), "/c", &HeaderMap::new(), async {
                Ok(rendered("[]"))
            })
            .await
            .unwrap();
        let bytes = axum::body::to_bytes(ok.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(bytes, "[]");
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
                    cache
                        .respond(view, Some(7), "/s", &HeaderMap::new(), render)
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
