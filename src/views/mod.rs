//! The read side: the three materialized views, and one module per view with its queries.

pub mod company_prospects;
pub mod company_summaries;
pub mod freshness;
pub mod prospect_search;
mod timestamp_json;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A materialized view this service serves and refreshes.
///
/// `ALL` is the one order in which every refresh path visits them (the same order as the SQL function
/// `refreshable_views()`): refreshing in different orders in different processes could deadlock.
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
