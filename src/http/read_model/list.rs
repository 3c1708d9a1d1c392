//! The list of a read model: one page of `{data, next_cursor, total}` with a `Link: <…>;
//! rel="next"` header, or every matching row as CSV; and the same list within one parent.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{HeaderValue, Uri};
use axum::response::Response;
use futures_util::TryStreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::super::error::ApiError;
use super::super::page::{CountMode, Format};
use super::super::params::path_id;
use super::super::response_cache::Rendered;
use super::super::response_cache::shows::{PageShown, Parent, Shows};
use super::export;
use super::request::{ListRequest, Read};
use super::respond::{respond, to_json};
use crate::views::filters::FilterSet;
use crate::views::{ReadModel, Shape};

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` (with the same filters and sort) for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// With `count=exact`: how many rows match, over all pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// With `count=estimated`: the query planner's estimate of `total` (instant, approximate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_total: Option<i64>,
}

/// `GET {API.path}`.
pub async fn list<M: ReadModel>(read: Read) -> Result<Response, ApiError> {
    let request = ListRequest::<M>::parse(read.query(), None, &*read.restriction::<M>()?)?;
    answer(&read, M::API.path, request, None).await
}

/// `GET {API.scoped.path}`: the list within the parent the path names (404 when there is none).
pub async fn scoped<M: ReadModel>(
    Path(parent): Path<String>,
    read: Read,
) -> Result<Response, ApiError> {
    let scope = M::API
        .scoped
        .expect("routed only for models with a scoped list");
    let parent = path_id(scope.param, parent)?;
    let restriction = read.restriction::<M>()?;
    let in_path = Some((scope.param, parent.clone()));
    let request = ListRequest::<M>::parse(read.query(), in_path, &restriction)?;
    let mut named = M::Filters::default();
    named.restrict(scope.param, std::slice::from_ref(&parent));
    let parent = Parent {
        id: parent,
        filters: named,
    };
    answer(&read, scope.path, request, Some(parent)).await
}

/// A 404 unless the parent of a scoped list exists for this caller: for a role with a row scope,
/// unless it has a row within the scope (so that a parent outside it is a 404 like one that does
/// not exist). Checked where the list is read, never for a cached page: a round that changes the
/// parent's rows drops the pages of its list (`PageShown::parent`), and a refresh all pages.
async fn parent_visible<M: ReadModel>(
    read: &Read,
    request: &ListRequest<M>,
    parent: &str,
) -> Result<(), ApiError> {
    let visible = if request.matches_nothing {
        false
    } else if !read.restriction::<M>()?.has_scope() {
        M::parent_exists(&read.db.pool, parent).await?
    } else {
        let mut rows = M::rows(
            &read.db.pool,
            &request.filters,
            request.sort,
            None,
            1,
            Shape::Faster,
        );
        rows.try_next().await?.is_some()
    };
    if visible {
        return Ok(());
    }
    let noun = M::API.scoped.map_or("parent", |scope| scope.noun);
    Err(ApiError::NotFound(format!(
        "There is no {noun} with id '{parent}'."
    )))
}

/// A page of `request`, or its CSV export. `parent`: the parent of a scoped list.
async fn answer<M: ReadModel>(
    read: &Read,
    endpoint: &str,
    request: ListRequest<M>,
    parent: Option<Parent<M>>,
) -> Result<Response, ApiError> {
    if export::wanted(request.page.format == Format::Csv, &read.headers) {
        if let Some(parent) = &parent {
            parent_visible(read, &request, &parent.id).await?;
        }
        return export::export(read, endpoint, request).await;
    }
    let (state, pool) = (&read.state, &read.db.pool);
    let scope = request.scope(endpoint);
    let page = &request.page;
    let after: Option<serde_json::Value> = match &page.cursor {
        Some(cursor) => Some(
            state
                .cursors
                .verify(&scope, cursor)
                .map_err(|e| ApiError::invalid("cursor", e.to_string()))?,
        ),
        None => None,
    };
    let key = format!(
        "{scope}|limit={}|count={:?}|cursor={}|fields={}",
        page.limit,
        page.count,
        page.cursor.as_deref().unwrap_or(""),
        page.fields.key()
    );
    let render = async {
        if let Some(parent) = &parent {
            parent_visible(read, &request, &parent.id).await?;
        }
        let filters = &request.filters;
        let mut rows: Vec<M::Row> = if request.matches_nothing {
            Vec::new()
        } else {
            M::rows(
                pool,
                filters,
                request.sort,
                after.as_ref(),
                page.limit + 1,
                Shape::Faster,
            )
            .try_collect()
            .await?
        };
        let next_cursor = if rows.len() as i64 > page.limit {
            rows.truncate(page.limit as usize);
            rows.last().map(|row| {
                state
                    .cursors
                    .sign(&scope, &M::cursor_key(request.sort, row))
            })
        } else {
            None
        };
        let (total, estimated_total) = match page.count {
            CountMode::None => (None, None),
            _ if request.matches_nothing => (Some(0), None),
            CountMode::Exact => (Some(M::count(pool, filters).await?), None),
            CountMode::Estimated => (None, Some(M::estimate(pool, filters).await?)),
        };
        let link = next_cursor
            .as_deref()
            .and_then(|cursor| next_link(&read.uri, cursor));
        let shows: Arc<dyn Shows> = Arc::new(PageShown::<M> {
            filters: filters.clone(),
            matches_nothing: request.matches_nothing,
            sort: request.sort,
            after: after.clone(),
            last: next_cursor
                .as_ref()
                .and_then(|_| rows.last())
                .map(|row| M::cursor_key(request.sort, row)),
            parent,
            total,
            estimated: page.count == CountMode::Estimated,
        });
        let json = if page.fields.is_all() {
            let capacity = M::ROW_BYTES * (rows.len() + 1);
            let page = Page {
                data: rows,
                next_cursor,
                total,
                estimated_total,
            };
            to_json(capacity, &page)?
        } else {
            let data = page
                .fields
                .select(&rows)
                .map_err(|e| ApiError::Internal(e.into()))?;
            to_json(
                0,
                &Page {
                    data,
                    next_cursor,
                    total,
                    estimated_total,
                },
            )?
        };
        Ok(Rendered {
            json,
            link,
            shows: Some(shows),
        })
    };
    respond(read, M::VIEW, &key, render).await
}

/// The same request with `cursor` replaced: `<path?query&cursor=…>; rel="next"`.
fn next_link(uri: &Uri, cursor: &str) -> Option<HeaderValue> {
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && *pair != "cursor" && !pair.starts_with("cursor="))
        .collect();
    let cursor_pair = format!("cursor={cursor}");
    query.push(&cursor_pair);
    HeaderValue::from_str(&format!(
        "<{}?{}>; rel=\"next\"",
        uri.path(),
        query.join("&")
    ))
    .ok()
}
