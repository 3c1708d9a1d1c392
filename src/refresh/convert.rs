//! Converting the read models between the modes: what `migrate` and `serve` do after the migrations.
//! Each read model is converted in its own transaction by `convert_read_model()` (migration 0007): the
//! new relation is built beside the old one, which keeps serving, and swapped in; readers wait only for
//! the swap.

use std::fmt;

use sqlx::PgPool;

use crate::config::{RefreshSettings, pg_duration};
use crate::db::set_local;
use crate::views::{Mode, ViewName};

/// What happened to one read model.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub view: ViewName,
    /// The mode it had, and has now.
    pub from: Mode,
    pub to: Mode,
    /// Whether a new relation was built; `false`: it was already as asked.
    pub rebuilt: bool,
    /// The rows it was built with (`None`: built unpopulated, as the first refresh will populate it).
    pub rows: Option<i64>,
    pub build_ms: i64,
    /// From asking for the old relation's lock to the end of the swap: how long new readers waited.
    pub swap_ms: i64,
    pub swap_attempts: i32,
}

/// Brings every read model to `mode`, built from its definition, one at a time in the fixed order.
pub async fn convert_all(
    pool: &PgPool,
    mode: Mode,
    settings: &RefreshSettings,
) -> Result<Vec<Conversion>, sqlx::Error> {
    let mut done = Vec::with_capacity(ViewName::ALL.len());
    for view in ViewName::ALL {
        done.push(convert(pool, view, mode, settings).await?);
    }
    Ok(done)
}

#[tracing::instrument(skip(pool, settings))]
async fn convert(
    pool: &PgPool,
    view: ViewName,
    mode: Mode,
    settings: &RefreshSettings,
) -> Result<Conversion, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A refresh or incremental round running elsewhere is waited for as long as one may run.
    let wait = pg_duration(settings.refresh_statement_timeout);
    let local = [
        ("lock_timeout", wait.as_str()),
        ("statement_timeout", wait.as_str()),
        ("maintenance_work_mem", settings.refresh_work_mem.as_str()),
    ];
    set_local(&mut tx, &local).await?;
    let built = sqlx::query!(
        r#"SELECT from_mode AS "from_mode!", row_count, build_ms AS "build_ms!", swap_ms AS "swap_ms!",
                  swap_attempts AS "swap_attempts!"
           FROM convert_read_model($1, $2)"#,
        view.as_str(),
        mode.as_str(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let conversion = match built {
        Some(built) => Conversion {
            view,
            from: built.from_mode.parse().map_err(sqlx::Error::Protocol)?,
            to: mode,
            rebuilt: true,
            rows: built.row_count,
            build_ms: built.build_ms,
            swap_ms: built.swap_ms,
            swap_attempts: built.swap_attempts,
        },
        None => Conversion {
            view,
            from: mode,
            to: mode,
            rebuilt: false,
            rows: None,
            build_ms: 0,
            swap_ms: 0,
            swap_attempts: 0,
        },
    };
    Ok(conversion)
}

fn relation(mode: Mode) -> &'static str {
    match mode {
        Mode::Refresh => "materialized view",
        Mode::Incremental => "table",
    }
}

/// One line for the terminal.
impl fmt::Display for Conversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = self.view.as_str();
        if !self.rebuilt {
            return write!(
                f,
                "{view:<22} {} ({}), as configured",
                self.to,
                relation(self.to)
            );
        }
        let what = if self.from == self.to {
            format!("{} rebuilt from its definition", relation(self.to))
        } else {
            format!(
                "{} -> {} ({})",
                relation(self.from),
                relation(self.to),
                self.to
            )
        };
        match self.rows {
            Some(rows) => write!(
                f,
                "{view:<22} {what}: {rows} rows built in {} ms while the old one served; readers waited {} ms for the swap ({} attempt{})",
                self.build_ms,
                self.swap_ms,
                self.swap_attempts,
                if self.swap_attempts == 1 { "" } else { "s" }
            ),
            None => write!(f, "{view:<22} {what}, not yet populated"),
        }
    }
}
