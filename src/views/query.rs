//! How a list resource declares its query once. `filters!` turns one struct declaration (a field,
//! its type and its doc comment per filter) into the filter struct, the table the HTTP layer parses
//! and documents from (`SPECS`) and the reader that fills the struct; `SortKey` does the same for
//! sort keys, each in both directions. The SQL stays static and compile-checked in each view's
//! module: one `WHERE` line and one bind per filter, one ORDER BY per sort key.

use chrono::{DateTime, Utc};

/// What a filter accepts: it decides how the value is parsed and how the OpenAPI document types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    /// One exact value.
    Text,
    /// Repeatable: any of the values given.
    AnyOf,
    /// One whole number within `i64` (the filter's type may narrow it, as `i32` does).
    WholeNumber { min: i64, max: i64 },
    /// One RFC 3339 instant.
    Timestamp,
}

/// One filter as the HTTP layer sees it: its parameter name, kind and description.
#[derive(Debug, Clone, Copy)]
pub struct FilterSpec {
    pub name: &'static str,
    pub kind: FilterKind,
    pub doc: &'static str,
}

impl FilterSpec {
    /// The doc comment as one paragraph.
    pub fn description(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Where filter values come from: the HTTP layer's query parameters, which report every problem
/// under the parameter's name.
pub trait FilterSource {
    fn text(&mut self, name: &str) -> Option<String>;
    fn any_of(&mut self, name: &str) -> Vec<String>;
    fn whole_number(&mut self, name: &str, min: i64, max: i64) -> Option<i64>;
    fn timestamp(&mut self, name: &str) -> Option<DateTime<Utc>>;
    fn reject(&mut self, name: &str, reason: String);
}

/// A filter field's type: how it is read and what kind of parameter it is.
pub trait FilterValue: Sized {
    const KIND: FilterKind;
    fn read(source: &mut dyn FilterSource, name: &str) -> Self;
    /// The value, for `x_min <= x_max` checks.
    fn as_number(&self) -> Option<i64> {
        None
    }
}

impl FilterValue for Option<String> {
    const KIND: FilterKind = FilterKind::Text;
    fn read(source: &mut dyn FilterSource, name: &str) -> Self {
        source.text(name)
    }
}

impl FilterValue for Vec<String> {
    const KIND: FilterKind = FilterKind::AnyOf;
    fn read(source: &mut dyn FilterSource, name: &str) -> Self {
        source.any_of(name)
    }
}

impl FilterValue for Option<i64> {
    const KIND: FilterKind = FilterKind::WholeNumber {
        min: i64::MIN,
        max: i64::MAX,
    };
    fn read(source: &mut dyn FilterSource, name: &str) -> Self {
        source.whole_number(name, i64::MIN, i64::MAX)
    }
    fn as_number(&self) -> Option<i64> {
        *self
    }
}

impl FilterValue for Option<i32> {
    const KIND: FilterKind = FilterKind::WholeNumber {
        min: i32::MIN as i64,
        max: i32::MAX as i64,
    };
    fn read(source: &mut dyn FilterSource, name: &str) -> Self {
        let value = source.whole_number(name, i32::MIN.into(), i32::MAX.into())?;
        i32::try_from(value).ok()
    }
    fn as_number(&self) -> Option<i64> {
        self.map(i64::from)
    }
}

impl FilterValue for Option<DateTime<Utc>> {
    const KIND: FilterKind = FilterKind::Timestamp;
    fn read(source: &mut dyn FilterSource, name: &str) -> Self {
        source.timestamp(name)
    }
}

/// What `filters!` declares, for code that works on any resource's filters (facets).
pub trait FilterSet: Clone + Default + serde::Serialize + Send + Sync + 'static {
    const SPECS: &'static [FilterSpec];
    fn read(source: &mut dyn FilterSource, skip: &[&str]) -> Self;
    fn without(&self, name: &str) -> Self;
}

/// Rejects `x_max` when it is below `x_min`, for every such pair of filters.
pub fn check_ranges(
    specs: &[FilterSpec],
    number: impl Fn(&str) -> Option<i64>,
    source: &mut dyn FilterSource,
) {
    for spec in specs {
        let Some(stem) = spec.name.strip_suffix("_min") else {
            continue;
        };
        let max_name = format!("{stem}_max");
        if let (Some(min), Some(max)) = (number(spec.name), number(&max_name))
            && min > max
        {
            source.reject(&max_name, format!("{max} is below {} ({min})", spec.name));
        }
    }
}

/// Declares a resource's filters once. Each field is one query parameter of the same name; its
/// type (`Option<String>`, `Vec<String>`, `Option<i64>`, `Option<i32>`, `Option<DateTime<Utc>>`)
/// decides how it is parsed and documented, and its doc comment is its description.
macro_rules! filters {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $( $(#[doc = $doc:literal])+ pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Default, serde::Serialize)]
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl $name {
            /// Every filter, in declaration order, for parsing and for the OpenAPI document.
            pub const SPECS: &'static [$crate::views::query::FilterSpec] = &[$(
                $crate::views::query::FilterSpec {
                    name: stringify!($field),
                    kind: <$ty as $crate::views::query::FilterValue>::KIND,
                    doc: concat!($($doc, "\n"),+),
                },
            )*];

            /// Reads every filter except those in `skip` from `source`, which collects problems.
            pub fn read(source: &mut dyn $crate::views::query::FilterSource, skip: &[&str]) -> Self {
                let filters = Self {$(
                    $field: if skip.contains(&stringify!($field)) {
                        Default::default()
                    } else {
                        $crate::views::query::FilterValue::read(source, stringify!($field))
                    },
                )*};
                $crate::views::query::check_ranges(Self::SPECS, |name| filters.number(name), source);
                filters
            }

            /// The same filters without the one named `name` (a facet's own).
            pub fn without(&self, name: &str) -> Self {
                let mut filters = self.clone();
                match name {
                    $( stringify!($field) => filters.$field = Default::default(), )*
                    _ => {}
                }
                filters
            }

            fn number(&self, name: &str) -> Option<i64> {
                match name {
                    $( stringify!($field) => $crate::views::query::FilterValue::as_number(&self.$field), )*
                    _ => None,
                }
            }
        }

        impl $crate::views::query::FilterSet for $name {
            const SPECS: &'static [$crate::views::query::FilterSpec] = $name::SPECS;
            fn read(source: &mut dyn $crate::views::query::FilterSource, skip: &[&str]) -> Self {
                $name::read(source, skip)
            }
            fn without(&self, name: &str) -> Self {
                $name::without(self, name)
            }
        }
    };
}
pub(crate) use filters;

/// A resource's facets: filters whose values can be counted (`GET /prospects/facets`). A facet has
/// its filter's name.
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

/// The most values one facet lists (an industry, country or department list is far shorter).
pub const MAX_FACET_VALUES: i64 = 100;

/// One value of a facet and how many rows have it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FacetCount {
    pub value: String,
    pub count: i64,
}

/// A resource's sort keys. Each sorts both ways: `name` ascending, `-name` descending, over the same
/// B-tree index read forwards or backwards; ties are broken by the row's id in the same direction.
pub trait SortKey: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// Every key with its parameter name.
    const ALL: &'static [(&'static str, Self)];
    /// The order without `sort`.
    const DEFAULT: Sort<Self>;
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
            .find(|(n, _)| *n == name)
            .map(|(_, key)| Sort {
                key: *key,
                descending,
            })
    }

    /// Every accepted value of `sort`: each key, then each key descending.
    pub fn values() -> Vec<String> {
        let names = K::ALL.iter().map(|(name, _)| name.to_string());
        names
            .clone()
            .chain(names.map(|name| format!("-{name}")))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Key {
        Name,
        Revenue,
    }

    impl SortKey for Key {
        const ALL: &'static [(&'static str, Self)] =
            &[("name", Key::Name), ("revenue", Key::Revenue)];
        const DEFAULT: Sort<Self> = Sort {
            key: Key::Name,
            descending: false,
        };
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
