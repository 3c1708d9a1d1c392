//! The read side: the three read models, and one module per read model with its queries.
//!
//! Each read model's facts (its definition, key, lock and current mode) live in the database's
//! `read_model_catalog` and `read_models` (migration 0006), which every SQL path reads; Rust knows
//! only the names, in the catalog's order (`ViewName::ALL`, checked against the catalog at startup).

pub mod company_prospects;
pub mod company_summaries;
pub mod freshness;
pub mod prospect_search;
pub mod query;
mod timestamp_json;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A read model this service serves and keeps fresh.
///
/// `ALL` is the one order in which every maintenance path visits them (the catalog's `position`):
/// refreshing in different orders in different processes could deadlock.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ViewName {
    CompanyProspectView,
    CompanySummaryView,
    ProspectSearchView,
}

impl ViewName {
    pub const ALL: [ViewName; 3] = [
        ViewName::CompanyProspectView,
        ViewName::CompanySummaryView,
        ViewName::ProspectSearchView,
    ];

    /// The view's position in `ALL`, for per-view arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ViewName::CompanyProspectView => "company_prospect_view",
            ViewName::CompanySummaryView => "company_summary_view",
            ViewName::ProspectSearchView => "prospect_search_view",
        }
    }
}

impl fmt::Display for ViewName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a read model is kept fresh: what its relation is in the database.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A materialized view, refreshed in full with `REFRESH MATERIALIZED VIEW CONCURRENTLY`.
    Refresh,
    /// A table with the same name, columns, key and indexes, in which the rows of the companies that
    /// changed are recomputed.
    Incremental,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Refresh => "refresh",
            Mode::Incremental => "incremental",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refresh" => Ok(Mode::Refresh),
            "incremental" => Ok(Mode::Incremental),
            other => Err(format!(
                "unknown maintenance mode '{other}'; expected refresh or incremental"
            )),
        }
    }
}

/// The error for a name that is not one of the three views.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown view '{0}'; expected one of company_prospect_view, company_summary_view, prospect_search_view"
)]
pub struct UnknownView(pub String);

impl FromStr for ViewName {
    type Err = UnknownView;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ViewName::ALL
            .into_iter()
            .find(|view| view.as_str() == s)
            .ok_or_else(|| UnknownView(s.to_owned()))
    }
}

/// Fails unless the database's read-model catalog lists exactly `ViewName::ALL`, in that order: a
/// binary and a schema that disagree about the read models must not run together.
pub async fn check_catalog(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let names = sqlx::query_scalar!("SELECT name FROM read_model_catalog ORDER BY position")
        .fetch_all(pool)
        .await?;
    let expected: Vec<&str> = ViewName::ALL.iter().map(|v| v.as_str()).collect();
    anyhow::ensure!(
        names == expected,
        "the database's read_model_catalog lists {names:?}, this binary serves {expected:?}"
    );
    Ok(())
}

/// The row count at the top of an `EXPLAIN (FORMAT JSON)` plan.
fn planned_rows(plan: &serde_json::Value) -> i64 {
    plan.pointer("/0/Plan/Plan Rows")
        .and_then(serde_json::Value::as_f64)
        .map_or(0, |rows| rows.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::ViewName;

    #[test]
    fn index_is_the_position_in_all() {
        for (position, view) in ViewName::ALL.into_iter().enumerate() {
            assert_eq!(view.index(), position);
        }
    }
}
