//! The read side: the read models, one module each (its row, filters, orders, facets and
//! statements, as a `ReadModel`), and what they share.
//!
//! Each read model's database facts (its definition, key, lock and current mode) live in the
//! database's `read_model_catalog` and `read_models` (schema/current.sql), which every SQL path
//! reads; Rust knows the names, in the catalog's order, from the one list below (checked against the
//! catalog at startup).
//!
//! Adding a read model: a migration (its definition view, relation and indexes, and its catalog
//! row), a module implementing `ReadModel`, and one line in `read_models!` below. Everything kept per
//! view is a `PerView`, and every `match` on `ViewName` is exhaustive, so a read model that is not
//! handled somewhere fails to compile.

pub mod company_prospects;
pub mod company_summaries;
pub mod filters;
pub mod freshness;
mod matching;
pub mod order;
mod per_view;
pub mod prospect_search;
mod read_model;
mod search_matching;
mod timestamp_json;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use per_view::PerView;
pub use read_model::{
    Admits, Api, IdPath, Image, Place, ReadModel, Shape, estimated_rows, in_shape,
    statements_of_page_and_counts,
};

/// The list of read models: each line is a view's variant, its name in the database, and the
/// `ReadModel` that serves it. Generates `ViewName`, and `visit_read_models`, which hands every model
/// to a `ReadModelVisitor` (the HTTP layer publishes them that way).
macro_rules! read_models {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal => $model:ty, )+) => {
        /// A read model this service serves and keeps fresh.
        ///
        /// `ALL` is the one order in which every maintenance path visits them (the catalog's
        /// `position`): refreshing in different orders in different processes could deadlock.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum ViewName {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl ViewName {
            pub const ALL: [ViewName; [$(ViewName::$variant),+].len()] = [$(ViewName::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( ViewName::$variant => $name, )+
                }
            }
        }

        /// Hands every read model to `visitor`, in `ViewName::ALL` order.
        pub fn visit_read_models(visitor: &mut impl ReadModelVisitor) {
            $( visitor.visit::<$model>(); )+
        }

        // Each model says which view it reads; it must be the one it is listed with.
        $( const _: () = assert!(matches!(<$model as ReadModel>::VIEW, ViewName::$variant)); )+
    };
}

read_models! {
    /// Every company with each of its prospects: `/prospects`, `/companies/{id}/prospects`.
    CompanyProspectView = "company_prospect_view" => company_prospects::CompanyProspects,
    /// One row per company with counts over its prospects: `/companies`.
    CompanySummaryView = "company_summary_view" => company_summaries::CompanySummaries,
    /// Prospects with their company, for search: `/search`.
    ProspectSearchView = "prospect_search_view" => prospect_search::ProspectSearch,
}

/// Something done once per read model, with its type (see `visit_read_models`).
pub trait ReadModelVisitor {
    fn visit<M: ReadModel>(&mut self);
}

impl ViewName {
    /// The view's position in `ALL` (what `PerView` indexes by).
    fn position(self) -> usize {
        self as usize
    }

    /// Those of `views` that a statement named in `names`, in the order of `views`.
    pub fn named_in(views: &[ViewName], names: &[String]) -> Vec<ViewName> {
        views
            .iter()
            .copied()
            .filter(|view| names.iter().any(|name| name == view.as_str()))
            .collect()
    }
}

impl fmt::Display for ViewName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a name that is not one of the read models.
#[derive(Debug, thiserror::Error)]
#[error("unknown view '{0}'; expected one of {names}", names = view_names())]
pub struct UnknownView(pub String);

fn view_names() -> String {
    ViewName::ALL.map(ViewName::as_str).join(", ")
}

impl FromStr for ViewName {
    type Err = UnknownView;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ViewName::ALL
            .into_iter()
            .find(|view| view.as_str() == s)
            .ok_or_else(|| UnknownView(s.to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_view_name_parses_back_and_unknown_ones_name_the_choices() {
        for view in ViewName::ALL {
            assert_eq!(view.as_str().parse::<ViewName>().unwrap(), view);
        }
        let error = "nope".parse::<ViewName>().unwrap_err().to_string();
        assert!(
            error.contains("company_prospect_view, company_summary_view"),
            "{error}"
        );
    }

    #[test]
    fn every_model_is_visited_once_in_order() {
        struct Seen(Vec<ViewName>);
        impl ReadModelVisitor for Seen {
            fn visit<M: ReadModel>(&mut self) {
                self.0.push(M::VIEW);
            }
        }
        let mut seen = Seen(vec![]);
        visit_read_models(&mut seen);
        assert_eq!(seen.0, ViewName::ALL);
    }
}
