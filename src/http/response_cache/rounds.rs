//! What each incremental round changed, as the response cache reads it: the rows each apply or
//! repair deleted and inserted (`read_model_changes`, recorded by the round itself, so that every
//! instance reads the same, whichever applied it), loaded once per round and kept for a while.
//! A generation that recorded none (a full refresh, a build, a rebuild) changed anything.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sqlx::PgPool;

use crate::views::{Image, PerView, ReadModel, ViewName};

/// Rounds kept per view (a few minutes of applies at four a second); an entry older than the
/// oldest is rendered anew.
const KEPT_PER_VIEW: usize = 2_000;

/// The rows one round deleted and inserted in one view.
pub struct RoundChanges {
    removed: Vec<Value>,
    added: Vec<Value>,
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
            removed: self.removed.iter().cloned().map(M::image).collect(),
            added: self.added.iter().cloned().map(M::image).collect(),
        });
        parsed.push((id, changed.clone()));
        changed
    }
}

/// The rounds loaded so far, per view: by log id, `None` for a generation that recorded no changes.
/// Every successful log row of the view with an id in `(floor, loaded_upto]` is in `rounds`.
#[derive(Default)]
struct Known {
    rounds: BTreeMap<i64, Option<Arc<RoundChanges>>>,
    floor: i64,
    loaded_upto: Option<i64>,
}

#[derive(Default)]
pub struct Rounds {
    known: PerView<tokio::sync::Mutex<Known>>,
}

impl Rounds {
    /// The changes of every generation of `view` after `from` up to `to`, in order; `None` when one
    /// of them recorded none (it may have changed anything).
    pub async fn between(
        &self,
        pool: &PgPool,
        view: ViewName,
        from: i64,
        to: i64,
    ) -> Result<Option<Vec<Arc<RoundChanges>>>, sqlx::Error> {
        let mut known = self.known[view].lock().await;
        known.load_between(pool, view, from, to).await?;
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
            known.load_between(pool, view, upto, to).await?;
        }
        Ok(())
    }
}

impl Known {
    /// Makes sure every round of `view` in `(from, to]` is loaded, then forgets the oldest beyond
    /// `KEPT_PER_VIEW`.
    async fn load_between(
        &mut self,
        pool: &PgPool,
        view: ViewName,
        from: i64,
        to: i64,
    ) -> Result<(), sqlx::Error> {
        match self.loaded_upto {
            None => {
                load(pool, view, from, to, self).await?;
                self.floor = from;
                self.loaded_upto = Some(to);
            }
            Some(upto) => {
                if upto < to {
                    load(pool, view, upto, to, self).await?;
                    self.loaded_upto = Some(to);
                }
                if from < self.floor {
                    let floor = self.floor;
                    load(pool, view, from, floor, self).await?;
                    self.floor = from;
                }
            }
        }
        while self.rounds.len() > KEPT_PER_VIEW {
            if let Some((oldest, _)) = self.rounds.pop_first() {
                self.floor = oldest;
            }
        }
        Ok(())
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
        r#"SELECT l.id, c.removed AS "removed?", c.added AS "added?"
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
            (Some(Value::Array(removed)), Some(Value::Array(added))) => {
                Some(Arc::new(RoundChanges {
                    removed,
                    added,
                    parsed: Mutex::new(Vec::new()),
                }))
            }
            _ => None,
        };
        known.rounds.insert(row.id, changes);
    }
    Ok(())
}
