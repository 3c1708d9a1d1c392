//! What each incremental round changed, as the response cache reads it: the rows each apply or
//! repair deleted and inserted (`read_model_changes`, recorded by the round itself, so that every
//! instance reads the same, whichever applied it), loaded once per round and kept for a while.
//! A generation that recorded none (a full refresh, a build, a rebuild) changed anything.
//!
//! What is kept is bounded in bytes, not only in rounds: under steady writes the rounds' rows come
//! at a steady rate (at 1M prospects, 50 companies changed a second: about 250 KB of JSON a round,
//! four rounds a second), and kept as parsed JSON for the 2,000 rounds the count allows they grew a
//! server by 5 MB a second towards gigabytes (measured: 119 MB after 15 s, 637 MB after 2 min).

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sqlx::PgPool;

use crate::views::{Image, PerView, ReadModel, ViewName};

/// Rounds kept per view at most (a few minutes of applies at four a second); an entry older than
/// the oldest is rendered anew.
const KEPT_PER_VIEW: usize = 2_000;

/// What a round costs to keep per byte of its rows' JSON text: the text, and the rows parsed from
/// it for the read model that reads the view (a row parsed takes about as much as its text, a
/// little more: `Option<String>` fields).
const KEPT_BYTES_PER_TEXT_BYTE: usize = 3;

/// The rows one round deleted and inserted in one view.
pub struct RoundChanges {
    /// JSON arrays of the rows, as recorded: compact until a read model asks for them.
    removed: Box<str>,
    added: Box<str>,
    /// The same rows parsed, per read model type reading the view (parsed once, when first asked).
    parsed: Mutex<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>,
}

/// The rows a round changed, as read model `M` reads them.
pub struct Changed<M: ReadModel> {
    pub removed: Vec<Image<M::Row>>,
    pub added: Vec<Image<M::Row>>,
}

impl<M: ReadModel> Changed<M> {
    /// Every changed row, old and new.
    pub fn rows(&self) -> impl Iterator<Item = (&Image<M::Row>, i64)> {
        let old = self.removed.iter().map(|image| (image, -1));
        let new = self.added.iter().map(|image| (image, 1));
        old.chain(new)
    }
}

impl RoundChanges {
    /// The changed rows as `M` reads them.
    pub fn as_read_by<M: ReadModel>(&self) -> Arc<Changed<M>> {
        let mut parsed = self.parsed.lock().expect("not poisoned");
        let id = TypeId::of::<M>();
        if let Some((_, changed)) = parsed.iter().find(|(type_id, _)| *type_id == id)
            && let Ok(changed) = changed.clone().downcast::<Changed<M>>()
        {
            return changed;
        }
        let changed = Arc::new(Changed::<M> {
            removed: images::<M>(&self.removed),
            added: images::<M>(&self.added),
        });
        parsed.push((id, changed.clone()));
        changed
    }

    /// What keeping it costs, about (`KEPT_BYTES_PER_TEXT_BYTE`).
    fn kept_bytes(&self) -> usize {
        (self.removed.len() + self.added.len()) * KEPT_BYTES_PER_TEXT_BYTE
    }
}

/// The rows of a recorded JSON array as `M` reads them (a row it cannot read: `Image::Unknown`).
fn images<M: ReadModel>(array: &str) -> Vec<Image<M::Row>> {
    match serde_json::from_str::<Vec<Value>>(array) {
        Ok(rows) => rows.into_iter().map(M::image).collect(),
        Err(_) => vec![Image::Unknown],
    }
}

/// The rounds loaded so far, per view: by log id, `None` for a generation that recorded no changes.
/// Every successful log row of the view with an id in `(floor, loaded_upto]` is in `rounds`.
#[derive(Default)]
struct Known {
    rounds: BTreeMap<i64, Option<Arc<RoundChanges>>>,
    floor: i64,
    loaded_upto: Option<i64>,
    /// What the rounds kept cost (`RoundChanges::kept_bytes`).
    bytes: usize,
}

pub struct Rounds {
    known: PerView<tokio::sync::Mutex<Known>>,
    /// What the rounds of one view may cost: the oldest beyond it are forgotten.
    max_bytes_per_view: usize,
}

impl Rounds {
    /// Rounds whose rows cost at most `max_bytes` for all the views together.
    pub fn new(max_bytes: usize) -> Rounds {
        Rounds {
            known: PerView::default(),
            max_bytes_per_view: max_bytes / ViewName::ALL.len(),
        }
    }

    /// The changes of every generation of `view` after `from` up to `to`, in order; `None` when one
    /// of them recorded none (it may have changed anything), or when `from` is older than the
    /// rounds kept (an entry that old is rendered anew).
    pub async fn between(
        &self,
        pool: &PgPool,
        view: ViewName,
        from: i64,
        to: i64,
    ) -> Result<Option<Vec<Arc<RoundChanges>>>, sqlx::Error> {
        let mut known = self.known[view].lock().await;
        if !known
            .load_between(pool, view, from, to, self.max_bytes_per_view)
            .await?
        {
            return Ok(None);
        }
        let mut rounds = Vec::new();
        for (_, changes) in known.rounds.range(from + 1..=to) {
            match changes {
                Some(changes) => rounds.push(changes.clone()),
                None => return Ok(None),
            }
        }
        Ok(Some(rounds))
    }

    /// Loads the rounds of `view` up to `to` that follow those loaded, if any were: the first
    /// requests of generation `to` then find them here rather than wait for them.
    pub async fn load_up_to(
        &self,
        pool: &PgPool,
        view: ViewName,
        to: i64,
    ) -> Result<(), sqlx::Error> {
        let mut known = self.known[view].lock().await;
        if let Some(upto) = known.loaded_upto
            && upto < to
        {
            known
                .load_between(pool, view, upto, to, self.max_bytes_per_view)
                .await?;
        }
        Ok(())
    }
}

impl Known {
    /// Loads the rounds of `view` after those loaded up to `to` (the first time: those after
    /// `from`), forgets the oldest beyond `KEPT_PER_VIEW` rounds or `max_bytes` (never the newest,
    /// which requests of the view's newest generation ask for), and says whether every round in
    /// `(from, to]` is here. Rounds older than those kept are never loaded again: an entry that old
    /// is rendered anew rather than brought through rounds read back only to be forgotten.
    async fn load_between(
        &mut self,
        pool: &PgPool,
        view: ViewName,
        from: i64,
        to: i64,
        max_bytes: usize,
    ) -> Result<bool, sqlx::Error> {
        match self.loaded_upto {
            None => {
                load(pool, view, from, to, self).await?;
                self.floor = from;
                self.loaded_upto = Some(to);
            }
            Some(_) if from < self.floor => return Ok(false),
            Some(upto) if upto < to => {
                load(pool, view, upto, to, self).await?;
                self.loaded_upto = Some(to);
            }
            Some(_) => {}
        }
        while self.rounds.len() > 1 && (self.rounds.len() > KEPT_PER_VIEW || self.bytes > max_bytes)
        {
            if let Some((oldest, changes)) = self.rounds.pop_first() {
                self.floor = oldest;
                self.bytes -= changes.map_or(0, |changes| changes.kept_bytes());
            }
        }
        Ok(from >= self.floor)
    }
}

/// Reads the successful log rows of `view` in `(after, upto]`, with their changes, into `known`.
async fn load(
    pool: &PgPool,
    view: ViewName,
    after: i64,
    upto: i64,
    known: &mut Known,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT l.id, c.removed::text AS "removed?", c.added::text AS "added?"
           FROM materialized_view_log l LEFT JOIN read_model_changes c ON c.log_id = l.id
           WHERE l.view_name = $1 AND l.status = 'ok' AND l.id > $2 AND l.id <= $3
           ORDER BY l.id"#,
        view.as_str(),
        after,
        upto,
    )
    .fetch_all(pool)
    .await?;
    for row in rows {
        let changes = match (row.removed, row.added) {
            (Some(removed), Some(added)) => Some(Arc::new(RoundChanges {
                removed: removed.into(),
                added: added.into(),
                parsed: Mutex::new(Vec::new()),
            })),
            _ => None,
        };
        known.bytes += changes.as_ref().map_or(0, |changes| changes.kept_bytes());
        if let Some(replaced) = known.rounds.insert(row.id, changes) {
            known.bytes -= replaced.map_or(0, |changes| changes.kept_bytes());
        }
    }
    Ok(())
}
