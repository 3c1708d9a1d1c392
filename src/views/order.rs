//! How a read model declares its orders and its facets: each sort key with its parameter name, each
//! served in both directions, and the filters whose values can be counted.

use serde_json::Value;

/// A read model's sort keys. Each sorts both ways: `name` ascending, `-name` descending, over the
/// same B-tree index read forwards or backwards; ties are broken by the row's id in the same
/// direction.
pub trait SortKey: Copy + Eq + std::fmt::Debug + Send + Sync + Unpin + 'static {
    /// Every key with its parameter name.
    const ALL: &'static [(&'static str, Self)];
    /// The order without `sort`.
    const DEFAULT: Sort<Self>;
    /// Whether clients choose the order (`sort=`); when false, rows always come in `DEFAULT` order.
    const CHOSEN_BY_CLIENT: bool = true;

    /// The fields of the model's row the order compares (a role that cannot see one of them cannot
    /// ask for the order).
    fn reads(self) -> &'static [&'static str];

    /// Whether `-key` reverses the order: false for a rank, which has one sense (best first).
    fn both_ways(self) -> bool {
        !self.parts().contains(&KeyPart::Rank)
    }

    /// What each element of the key's cursor (`ReadModel::cursor_key`) holds, so that two keys can
    /// be compared as the ORDER BY compares them (`compare_keys`); empty when Rust cannot (a rank
    /// computed per query).
    fn parts(self) -> &'static [KeyPart] {
        &[]
    }
}

/// Declares a read model's sort keys, each once: its variant, its parameter name, the row fields it
/// compares and (optionally) what its cursor key holds. The first is the default, ascending.
/// Exported, as `filters!`, for read models defined outside this crate.
#[macro_export]
macro_rules! sort_keys {
    (
        $(#[$attr:meta])*
        $vis:vis enum $name:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $param:literal,
               reads [$($read:literal),*] $(, parts [$($part:tt)*])? ; )+
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl $crate::views::order::SortKey for $name {
            const ALL: &'static [(&'static str, Self)] = &[$( ($param, $name::$variant) ),+];
            const DEFAULT: $crate::views::order::Sort<Self> = $crate::views::order::Sort {
                key: Self::ALL[0].1,
                descending: false,
            };

            fn reads(self) -> &'static [&'static str] {
                match self {
                    $( $name::$variant => &[$($read),*], )+
                }
            }

            fn parts(self) -> &'static [$crate::views::order::KeyPart] {
                #[allow(unused_imports)]
                use $crate::views::order::KeyPart;
                match self {
                    $( $name::$variant => &[$($($part)*)?], )+
                }
            }
        }
    };
}
pub use crate::sort_keys;

/// A read model's page statement in the order `$sort` asks for, in the shape `$filter_first`
/// chooses. Each sort key is one line: its ORDER BY expressions, the row's id last, and how the
/// cursor (`ReadModel::cursor_key`) reads them back; both directions follow from it (`>` and
/// ascending, `<` and `DESC` on every expression), so that they cannot disagree. `$page!(…)` is the
/// model's statement macro, called with its own arguments in parentheses, then `shape:`
/// (`in_index_order`, or `filter_first` when `$filter_first` is true: see `Shape`), `keyset:` and
/// `order:` fragments; `.$run(…)` runs the statement (each order and shape is a statement of its
/// own, and so a type of its own; `$run` must give one type for all of them, as `fetch` does).
#[macro_export]
macro_rules! page_in_order {
    ($sort:expr, $filter_first:expr, $page:ident!$args:tt .$run:ident $run_args:tt, {
        $($key:path => [$first:literal $(, $rest:literal)*] from $cursor:literal;)+
    }) => {
        match ($sort.key, $sort.descending) {
            $(
                ($key, false) => $crate::page_in_order!(@shape $filter_first, $page!$args .$run $run_args,
                    ("(" + $first $(+ ", " + $rest)* + ") > " + $cursor),
                    ($first $(+ ", " + $rest)*)),
                ($key, true) => $crate::page_in_order!(@shape $filter_first, $page!$args .$run $run_args,
                    ("(" + $first $(+ ", " + $rest)* + ") < " + $cursor),
                    ($first + " DESC" $(+ ", " + $rest + " DESC")*)),
            )+
        }
    };
    (@shape $filter_first:expr, $page:ident!$args:tt .$run:ident $run_args:tt, $keyset:tt, $order:tt) => {
        if $filter_first {
            $page!($args, shape: filter_first, keyset: $keyset, order: $order).$run $run_args
        } else {
            $page!($args, shape: in_index_order, keyset: $keyset, order: $order).$run $run_args
        }
    };
}
pub use crate::page_in_order;

/// The page statement in either shape, from a model's `$matching!` statement macro (its FROM and
/// WHERE with every filter, between a `select` and a `then`), its `$columns` (a SELECT list),
/// `$restrict` (conditions of its own, as one row by id) and the `keyset` and `order` of
/// `page_in_order!`:
/// - `in_index_order`: the planner may walk an index in the order until the page is full, which is
///   what a first page of many matches wants;
/// - `filter_first`: the matches are read first (`MATERIALIZED`: the planner cannot walk the order
///   index instead), then sorted; for few matches, which a walk may have to look far for (the ORDER
///   BY + LIMIT trap: its costing assumes the matches are spread evenly through the order).
#[macro_export]
macro_rules! page_shape {
    (in_index_order, $matching:ident!($kind:ident [$($head:tt)*] $explain:literal, $columns:literal,
     $restrict:literal, ($($keyset:tt)+), ($($order:tt)+)), $($binds:tt)*) => {
        $matching!($kind [$($head)*]
            select ($explain + $columns)
            then ($restrict + "\n                 AND ($1::jsonb IS NULL OR " + $($keyset)+
                  + ")\n               ORDER BY " + $($order)+ + " LIMIT $2"),
            $($binds)*)
    };
    (filter_first, $matching:ident!($kind:ident [$($head:tt)*] $explain:literal, $columns:literal,
     $restrict:literal, ($($keyset:tt)+), ($($order:tt)+)), $($binds:tt)*) => {
        $matching!($kind [$($head)*]
            select ($explain + "WITH matches AS MATERIALIZED (SELECT *")
            then ($restrict + "\n                 AND ($1::jsonb IS NULL OR " + $($keyset)+ + "))\n"
                  + $columns + "\n               FROM matches ORDER BY " + $($order)+ + " LIMIT $2"),
            $($binds)*)
    };
}
pub use crate::page_shape;

/// One element of a cursor key, as its SQL compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    /// Text (with NULL as '', as the orders' COALESCE has it).
    Text,
    /// A whole number.
    Number,
    /// An RFC 3339 instant, or `-infinity`.
    Instant,
    /// A whole number, the largest first (a relevance score).
    Rank,
}

/// How cursor key `a` compares with `b` in `sort`'s order (`Less`: `a` comes first), as PostgreSQL
/// would order them; `None` when Rust cannot tell: an order it cannot compare, or text when the
/// database's collation is not byte order (`bytewise` false: en_US and the like order text by
/// rules Rust does not have).
pub fn compare_keys<K: SortKey>(
    sort: Sort<K>,
    a: &Value,
    b: &Value,
    bytewise: bool,
) -> Option<std::cmp::Ordering> {
    let parts = sort.key.parts();
    let (a, b) = (a.as_array()?, b.as_array()?);
    if parts.is_empty() || a.len() != parts.len() || b.len() != parts.len() {
        return None;
    }
    for (part, (x, y)) in parts.iter().zip(a.iter().zip(b)) {
        let order = match part {
            KeyPart::Text if bytewise => x.as_str()?.as_bytes().cmp(y.as_str()?.as_bytes()),
            KeyPart::Text => return None,
            KeyPart::Number => x.as_i64()?.cmp(&y.as_i64()?),
            KeyPart::Instant => instant(x)?.cmp(&instant(y)?),
            KeyPart::Rank => y.as_i64()?.cmp(&x.as_i64()?),
        };
        if order.is_ne() {
            return Some(if sort.descending {
                order.reverse()
            } else {
                order
            });
        }
    }
    Some(std::cmp::Ordering::Equal)
}

/// An instant of a cursor key, `-infinity` the earliest.
fn instant(value: &Value) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
    match value.as_str()? {
        "-infinity" => Some(None),
        text => chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|at| Some(at.to_utc())),
    }
}

/// A sort key and its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort<K> {
    pub key: K,
    pub descending: bool,
}

impl<K: SortKey> Sort<K> {
    /// `name` or `-name`.
    pub fn parse(text: &str) -> Option<Sort<K>> {
        let (name, descending) = match text.strip_prefix('-') {
            Some(name) => (name, true),
            None => (text, false),
        };
        K::ALL
            .iter()
            .find(|(n, key)| *n == name && (!descending || key.both_ways()))
            .map(|(_, key)| Sort {
                key: *key,
                descending,
            })
    }

    /// Every accepted value of `sort`: each key, then each key descending that can be reversed.
    pub fn values() -> Vec<String> {
        let names = K::ALL.iter().map(|(name, _)| name.to_string());
        let reversed = K::ALL
            .iter()
            .filter(|(_, key)| key.both_ways())
            .map(|(name, _)| format!("-{name}"));
        names.chain(reversed).collect()
    }

    pub fn name(&self) -> String {
        let name = K::ALL
            .iter()
            .find(|(_, key)| *key == self.key)
            .map_or("?", |(name, _)| name);
        if self.descending {
            format!("-{name}")
        } else {
            name.to_owned()
        }
    }
}

/// A read model's facets: filters whose values can be counted (`GET /prospects/facets`). A facet
/// has its filter's name.
pub trait Facet: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    const ALL: &'static [(&'static str, Self)];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, facet)| *facet == self)
            .map_or("?", |(name, _)| name)
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, facet)| *facet)
    }
}

/// The facets of a read model that has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoFacets {}

impl Facet for NoFacets {
    const ALL: &'static [(&'static str, Self)] = &[];
}

/// The most values one facet lists (an industry, country or department list is far shorter).
pub const MAX_FACET_VALUES: i64 = 100;

/// One group of a counting statement: a facet's value (NULL in the one group of all matching rows,
/// when the statement counts no facet) and how many rows have it.
pub struct Counted {
    pub value: Option<String>,
    pub count: i64,
}

impl Counted {
    /// The count of the one group of all matching rows (none when no row matches).
    pub fn total(group: Option<Counted>) -> i64 {
        group.map_or(0, |group| group.count)
    }

    /// A facet's groups, which have values.
    pub fn facet_counts(groups: Vec<Counted>) -> Vec<FacetCount> {
        groups
            .into_iter()
            .filter_map(|group| {
                Some(FacetCount {
                    value: group.value?,
                    count: group.count,
                })
            })
            .collect()
    }
}

/// One value of a facet and how many rows have it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FacetCount {
    pub value: String,
    pub count: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    sort_keys! {
        enum Key {
            Name = "name", reads [];
            Revenue = "revenue", reads [];
        }
    }

    #[test]
    fn every_key_sorts_both_ways_and_names_itself_back() {
        assert_eq!(
            Sort::<Key>::values(),
            ["name", "revenue", "-name", "-revenue"]
        );
        for value in Sort::<Key>::values() {
            assert_eq!(Sort::<Key>::parse(&value).unwrap().name(), value);
        }
        assert_eq!(
            Sort::<Key>::parse("-revenue"),
            Some(Sort {
                key: Key::Revenue,
                descending: true
            })
        );
        assert_eq!(Sort::<Key>::parse("--name"), None);
        assert_eq!(Sort::<Key>::parse("bogus"), None);
    }
}
