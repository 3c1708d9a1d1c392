//! CSV exports of the lists (`Accept: text/csv` or `format=csv`): every matching row in the list's
//! order and fields, not one page, streamed in constant memory (a bounded channel between the
//! query's row stream and the response body), up to `CSV_MAX_ROWS`; a request matching more is
//! refused before any row is sent, and so are paging parameters. RFC 4180 quoting comes from the
//! `csv` crate. An export has the freshness headers and an ETag like a page.
//!
//! Every export is accounted for before its first byte: the rows are reserved against the role's
//! `export_rows_per_day` and a `started` row is written to the audit log, in one transaction, and
//! the export is refused when either fails (fail closed); when the body ends, a `completed` or
//! `failed` row records the rows and bytes sent.
//!
//! This is contact data opened in spreadsheets: a text cell that begins with `=`, `+`, `-`, `@`, a
//! tab or a carriage return is written with a leading `'`, so that no spreadsheet runs it as a
//! formula (OWASP, CSV injection).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::super::error::{ApiError, InvalidParam};
use super::super::freshness::{Gate, gate_tagged};
use super::request::{ListRequest, Read};
use crate::access::audit::{self, Action, Outcome};
use crate::views::{ReadModel, Shape};

const CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// Rows written per chunk of the body; the channel holds a few chunks, so memory stays bounded.
const ROWS_PER_CHUNK: usize = 256;
const CHUNKS_IN_FLIGHT: usize = 4;

/// Whether the client asked for CSV: `format=csv`, or `text/csv` in `Accept`.
pub fn wanted(format_csv: bool, headers: &HeaderMap) -> bool {
    format_csv
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|media| media.trim().to_ascii_lowercase().starts_with("text/csv"))
}

/// Every row `request` matches, as CSV: refused when it pages, or matches more than
/// `CSV_MAX_ROWS`; otherwise streamed.
pub async fn export<M: ReadModel>(
    read: &Read,
    endpoint: &str,
    request: ListRequest<M>,
) -> Result<Response, ApiError> {
    let (state, db) = (&read.state, &read.db);
    let paging: Vec<InvalidParam> = request
        .page
        .paging_given()
        .into_iter()
        .map(|name| {
            InvalidParam::new(
                name,
                "a CSV export holds every matching row; leave paging out",
            )
        })
        .collect();
    if !paging.is_empty() {
        return Err(ApiError::InvalidParams(paging));
    }
    let key = read.response_key(&format!(
        "{}|csv|fields={}",
        request.scope(endpoint),
        request.page.fields.key()
    ));
    let fresh = match gate_tagged(read, M::VIEW, &key).await? {
        Gate::NotModified(response) => return Ok(response),
        Gate::Serve(fresh) => fresh,
    };
    let max = state.csv_max_rows;
    let matching = if request.matches_nothing {
        0
    } else {
        M::count(&db.pool, &request.filters).await?
    };
    if matching > max {
        return Err(ApiError::invalid(
            "format",
            format!(
                "the filters match {matching} rows; a CSV export holds at most {max} \
                 (CSV_MAX_ROWS): narrow the filters"
            ),
        ));
    }
    let names = request.page.fields.names::<M::Row>();
    let mut entry = audit::Entry::new(
        &read.caller,
        Action::Export,
        read.uri.path(),
        Outcome::Started,
    );
    entry.request_id = read
        .headers
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .map(str::to_owned);
    entry.filters = serde_json::to_value(&request.filters).ok();
    entry.fields = Some(names.join(","));
    entry.rows = Some(matching);
    account_for(read, &entry, matching).await?;
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let (pool, primary) = (db.pool.clone(), state.pool.clone());
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        let mut sent = Sent::default();
        let written = write_rows::<M>(&request, &pool, max, &names, &sender, &mut sent).await;
        let mut end = entry.with_outcome(Outcome::Completed);
        end.rows = Some(sent.rows);
        end.bytes = Some(sent.bytes);
        match written {
            Ok(true) => {}
            Ok(false) => {
                end.outcome = Outcome::Failed;
                end.detail = Some("the client went away before the end".to_owned());
            }
            Err(error) => {
                // The status is sent: all a client can be told is that the body broke off.
                tracing::warn!(%error, "a CSV export failed part way");
                end.outcome = Outcome::Failed;
                end.detail = Some(format!("the export failed: {error}"));
                let _ = sender
                    .send(Err(std::io::Error::other("the export failed")))
                    .await;
            }
        }
        metrics.record_exported_rows(&end.role, sent.rows);
        if let Err(error) = audit::record(&primary, &end).await {
            tracing::error!(%error, request_id = ?end.request_id, "could not record the end of an export in the audit log");
        }
    });
    // Fused: the compression layer may poll the body once more after its end.
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    })
    .fuse();
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    let file_name = endpoint.rsplit('/').next().unwrap_or("export");
    if let Ok(disposition) =
        HeaderValue::from_str(&format!("attachment; filename=\"{file_name}.csv\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(
        header::VARY,
        HeaderValue::from_static("accept, accept-encoding"),
    );
    Ok(fresh.apply(response))
}

/// Reserves the export's rows against the role's daily allowance and writes its `started` audit
/// row, in one transaction on the primary: both or neither.
async fn account_for(read: &Read, entry: &audit::Entry, rows: i64) -> Result<(), ApiError> {
    let unwritable = |error: sqlx::Error| ApiError::AuditUnavailable(error.to_string());
    let mut tx = read.state.pool.begin().await.map_err(unwritable)?;
    if let Some(limit) = read.caller.role.export_rows_per_day {
        let credential = &entry.credential;
        if !audit::reserve_export_rows(&mut *tx, credential, rows, limit)
            .await
            .map_err(unwritable)?
        {
            let exported = audit::exported_today(&mut *tx, credential)
                .await
                .map_err(unwritable)?;
            let mut refused = entry.with_outcome(Outcome::Refused);
            refused.detail = Some(format!(
                "over export_rows_per_day ({limit}); {exported} exported today"
            ));
            audit::record(&mut *tx, &refused)
                .await
                .map_err(unwritable)?;
            tx.commit().await.map_err(unwritable)?;
            return Err(ApiError::ExportQuota {
                detail: format!(
                    "Your role ({}) exports at most {limit} rows a day per credential; {exported} \
                     have been exported today and this export holds {rows}. Narrow the filters, or \
                     wait for tomorrow (UTC).",
                    read.caller.role.name
                ),
                retry_after_secs: seconds_until_utc_midnight(),
            });
        }
    }
    audit::record(&mut *tx, entry).await.map_err(unwritable)?;
    tx.commit().await.map_err(unwritable)
}

fn seconds_until_utc_midnight() -> u64 {
    let now = chrono::Utc::now();
    let tomorrow = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    (tomorrow - now).num_seconds().max(1) as u64
}

/// What an export has sent so far.
#[derive(Default)]
struct Sent {
    rows: i64,
    bytes: i64,
}

/// Writes the header row and every row, a chunk at a time; false when the client went away
/// before the end.
async fn write_rows<M: ReadModel>(
    request: &ListRequest<M>,
    pool: &sqlx::PgPool,
    max: i64,
    names: &[String],
    sender: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    sent: &mut Sent,
) -> anyhow::Result<bool> {
    let mut writer = new_writer();
    writer.write_record(names)?;
    let mut rows = if request.matches_nothing {
        futures_util::stream::empty().boxed()
    } else {
        M::rows(
            pool,
            &request.filters,
            request.sort,
            None,
            max,
            Shape::Faster,
        )
    };
    let mut in_chunk = 0;
    while let Some(row) = rows.try_next().await? {
        let Value::Object(map) = serde_json::to_value(&row)? else {
            anyhow::bail!("a row did not serialize as an object");
        };
        writer.write_record(names.iter().map(|name| cell(map.get(name))))?;
        in_chunk += 1;
        if in_chunk == ROWS_PER_CHUNK {
            let chunk = std::mem::replace(&mut writer, new_writer()).into_inner()?;
            if !send(sender, chunk, std::mem::take(&mut in_chunk), sent).await {
                return Ok(false);
            }
        }
    }
    Ok(send(sender, writer.into_inner()?, in_chunk, sent).await)
}

/// Sends one chunk of `rows` rows; false when the client has gone.
async fn send(
    sender: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    chunk: Vec<u8>,
    rows: usize,
    sent: &mut Sent,
) -> bool {
    let bytes = chunk.len() as i64;
    if sender.send(Ok(Bytes::from(chunk))).await.is_err() {
        return false;
    }
    sent.rows += rows as i64;
    sent.bytes += bytes;
    true
}

fn new_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(ROWS_PER_CHUNK * 1024))
}

/// One cell: text as it is (made inert when a spreadsheet would read it as a formula), numbers and
/// booleans as JSON writes them, nothing for null.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => inert(text),
        Some(other) => other.to_string(),
    }
}

fn inert(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_made_inert_and_other_text_is_left_alone() {
        for (text, written) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1 555", "'+1 555"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tTab", "'\tTab"),
            ("\rCR", "'\rCR"),
            ("Ada = Lovelace", "Ada = Lovelace"),
            ("", ""),
        ] {
            assert_eq!(cell(Some(&Value::from(text))), written, "{text:?}");
        }
        assert_eq!(
            cell(Some(&Value::from(-5))),
            "-5",
            "numbers are data, not text"
        );
        assert_eq!(cell(None), "");
    }

    #[test]
    fn quoting_follows_rfc_4180() {
        let mut writer = new_writer();
        writer
            .write_record(["plain", "with,comma", "with \"quotes\"", "two\nlines"])
            .unwrap();
        let written = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(
            written,
            "plain,\"with,comma\",\"with \"\"quotes\"\"\",\"two\nlines\"\r\n"
        );
    }

    #[test]
    fn csv_is_asked_for_by_format_or_accept() {
        let mut headers = HeaderMap::new();
        assert!(!wanted(false, &headers));
        assert!(wanted(true, &headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, Text/CSV;q=0.9"),
        );
        assert!(wanted(false, &headers));
    }
}
