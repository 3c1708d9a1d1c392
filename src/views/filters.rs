//! How a read model declares its filters once. `filters!` turns one struct declaration (a field, its
//! type and its doc comment per filter) into the filter struct, the table the HTTP layer parses and
//! documents from (`SPECS`) and the reader that fills the struct. The SQL stays static and
//! compile-checked in each read model's module: one `WHERE` line and one bind per filter.

use chrono::{DateTime, Utc};
use serde::Serialize;

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
    /// Required: whitespace-separated search terms, `1..=max` of them, each at least `min_chars`.
    Terms { max: usize, min_chars: usize },
}

/// One filter as the HTTP layer sees it: its parameter name, kind and description.
#[derive(Debug, Clone, Copy)]
pub struct FilterSpec {
    pub name: &'static str,
    pub kind: FilterKind,
    pub doc: &'static str,
    /// The fields of the model's row whose values it tests (a role that cannot see one of them
    /// cannot use the filter). Its own name unless declared with `#[reads(...)]`.
    pub reads: &'static [&'static str],
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
    fn given(&self, name: &str) -> bool;
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
    /// Narrows the filter to rows whose value is one of `allowed` (a role's row scope, or the id a
    /// path gives).
    fn restrict(&mut self, allowed: &[String]) -> Restricted {
        let _ = allowed;
        Restricted::Impossible
    }
    /// Leaves out of what it matches the fields in `hidden`, of those it `reads` (a search over
    /// several fields, for a role that cannot see some of them).
    fn hide(&mut self, reads: &'static [&'static str], hidden: &[&str]) {
        let _ = (reads, hidden);
    }
}

/// What narrowing a filter to some values gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restricted {
    /// It now admits only rows with those values (and, if it had values, only the common ones).
    Narrowed,
    /// No row can match: the values it had are all outside those allowed.
    Nothing,
    /// This kind of filter cannot hold those values (a range, or one value of several allowed).
    Impossible,
}

impl FilterValue for Option<String> {
    const KIND: FilterKind = FilterKind::Text;
    fn read(source: &mut dyn FilterSource, name: &str) -> Self {
        source.text(name)
    }
    fn restrict(&mut self, allowed: &[String]) -> Restricted {
        match (self.as_ref(), allowed) {
            (Some(value), _) if allowed.contains(value) => Restricted::Narrowed,
            (Some(_), _) => Restricted::Nothing,
            (None, [one]) => {
                *self = Some(one.clone());
                Restricted::Narrowed
            }
            (None, _) => Restricted::Impossible,
        }
    }
}

impl FilterValue for Vec<String> {
    const KIND: FilterKind = FilterKind::AnyOf;
    fn read(source: &mut dyn FilterSource, name: &str) -> Self {
        source.any_of(name)
    }
    fn restrict(&mut self, allowed: &[String]) -> Restricted {
        if self.is_empty() {
            *self = allowed.to_vec();
            self.sort();
            self.dedup();
        } else {
            self.retain(|value| allowed.contains(value));
        }
        if self.is_empty() {
            Restricted::Nothing
        } else {
            Restricted::Narrowed
        }
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

/// The terms of a search: at most `Terms::MAX`, each at least `Terms::MIN_CHARS` characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Terms {
    pub terms: Vec<String>,
    /// Whether the last term may be the start of a word (type-ahead): unless the text ends in
    /// whitespace, as it does once the user has finished typing the word.
    pub prefix_last: bool,
    /// Fields searched by default that this caller may not see, so must not match on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
}

impl Terms {
    pub const MAX: usize = 5;
    pub const MIN_CHARS: usize = 1;

    /// The terms as one text, as the search statements take them.
    pub fn text(&self) -> String {
        self.terms.join(" ")
    }

    /// Why these terms cannot be searched for, if they cannot.
    fn problem(terms: &[String]) -> Option<String> {
        if terms.is_empty() {
            return Some("contains no terms".to_owned());
        }
        (terms.len() > Self::MAX).then(|| {
            format!(
                "{} terms given; at most {} are accepted",
                terms.len(),
                Self::MAX
            )
        })
    }
}

impl FilterValue for Terms {
    const KIND: FilterKind = FilterKind::Terms {
        max: Terms::MAX,
        min_chars: Terms::MIN_CHARS,
    };
    fn read(source: &mut dyn FilterSource, name: &str) -> Self {
        if !source.given(name) {
            source.reject(name, "is required: the terms to search for".to_owned());
            return Terms::default();
        }
        let Some(text) = source.text(name) else {
            return Terms::default();
        };
        // ASCII whitespace only, as the documented pattern says: one rule for clients and server.
        let terms: Vec<String> = text.split_ascii_whitespace().map(str::to_owned).collect();
        if let Some(reason) = Terms::problem(&terms) {
            source.reject(name, reason);
        }
        Terms {
            terms,
            prefix_last: !text.ends_with(|c: char| c.is_ascii_whitespace()),
            excluded: vec![],
        }
    }
    fn hide(&mut self, reads: &'static [&'static str], hidden: &[&str]) {
        self.excluded = reads
            .iter()
            .filter(|field| hidden.contains(field))
            .map(|field| (*field).to_owned())
            .collect();
    }
}

/// What `filters!` declares, for code that works on any read model's filters.
pub trait FilterSet:
    std::fmt::Debug + Clone + Default + Serialize + Send + Sync + Unpin + 'static
{
    const SPECS: &'static [FilterSpec];
    /// Reads every filter except those in `skip` from `source`, which collects problems.
    fn read(source: &mut dyn FilterSource, skip: &[&str]) -> Self;
    /// The same filters without the one named `name` (a facet's own).
    fn without(&self, name: &str) -> Self;
    /// Narrows the filter `name` to `allowed` values (`Impossible` when there is no such filter).
    fn restrict(&mut self, name: &str, allowed: &[String]) -> Restricted;
    /// Leaves the fields in `hidden` out of what every filter matches on.
    fn hide(&mut self, hidden: &[&str]);
    /// Whether no filter is set: every row matches.
    fn is_empty(&self) -> bool;
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

/// A repeatable filter's values for binding: NULL when none were given.
pub fn any_of(values: &[String]) -> Option<&[String]> {
    (!values.is_empty()).then_some(values)
}

/// Makes `%`, `_` and `\` match themselves in a LIKE pattern.
pub fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// `%text%` for a case-insensitive substring match, `%`, `_` and `\` matching themselves.
pub fn contains_pattern(text: Option<&str>) -> Option<String> {
    text.map(|text| format!("%{}%", escape_like(text)))
}

/// Declares a read model's filters once (exported: a read model defined outside this crate, as the
/// tests' own, declares its filters the same way). Each field is one query parameter of the same name; its
/// type (`Option<String>`, `Vec<String>`, `Option<i64>`, `Option<i32>`, `Option<DateTime<Utc>>`,
/// `Terms`) decides how it is parsed and documented, and its doc comment is its description.
#[macro_export]
macro_rules! filters {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $( $(#[doc = $doc:literal])+ $(#[reads($($read:literal),+)])? pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Default, serde::Serialize)]
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl $name {
            /// Every filter, in declaration order, for parsing and for the OpenAPI document.
            pub const SPECS: &'static [$crate::views::filters::FilterSpec] = &[$(
                $crate::views::filters::FilterSpec {
                    name: stringify!($field),
                    kind: <$ty as $crate::views::filters::FilterValue>::KIND,
                    doc: concat!($($doc, "\n"),+),
                    reads: $crate::filters!(@reads $field $($($read),+)?),
                },
            )*];

            fn number(&self, name: &str) -> Option<i64> {
                match name {
                    $( stringify!($field) => $crate::views::filters::FilterValue::as_number(&self.$field), )*
                    _ => None,
                }
            }
        }

        impl $crate::views::filters::FilterSet for $name {
            const SPECS: &'static [$crate::views::filters::FilterSpec] = $name::SPECS;

            fn read(source: &mut dyn $crate::views::filters::FilterSource, skip: &[&str]) -> Self {
                let filters = Self {$(
                    $field: if skip.contains(&stringify!($field)) {
                        Default::default()
                    } else {
                        $crate::views::filters::FilterValue::read(source, stringify!($field))
                    },
                )*};
                $crate::views::filters::check_ranges(Self::SPECS, |name| filters.number(name), source);
                filters
            }

            fn without(&self, name: &str) -> Self {
                let mut filters = self.clone();
                match name {
                    $( stringify!($field) => filters.$field = Default::default(), )*
                    _ => {}
                }
                filters
            }

            fn restrict(&mut self, name: &str, allowed: &[String]) -> $crate::views::filters::Restricted {
                match name {
                    $( stringify!($field) => $crate::views::filters::FilterValue::restrict(&mut self.$field, allowed), )*
                    _ => $crate::views::filters::Restricted::Impossible,
                }
            }

            fn hide(&mut self, hidden: &[&str]) {
                $( $crate::views::filters::FilterValue::hide(
                    &mut self.$field,
                    $crate::filters!(@reads $field $($($read),+)?),
                    hidden,
                ); )*
            }

            fn is_empty(&self) -> bool {
                true $( && self.$field == <$ty as Default>::default() )*
            }
        }
    };
    (@reads $field:ident) => { &[stringify!($field)] };
    (@reads $field:ident $($read:literal),+) => { &[$($read),+] };
}
pub use crate::filters;

#[cfg(test)]
mod tests {
    use super::*;

    filters! {
        /// Two filters, for the tests.
        pub struct Example {
            /// Lowest size.
            pub size_min: Option<i64>,
            /// Highest size.
            pub size_max: Option<i64>,
        }
    }

    #[derive(Default)]
    struct Values(Vec<(&'static str, String)>, Vec<(String, String)>);

    impl FilterSource for Values {
        fn given(&self, name: &str) -> bool {
            self.0.iter().any(|(n, _)| *n == name)
        }
        fn text(&mut self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        }
        fn any_of(&mut self, name: &str) -> Vec<String> {
            self.text(name).into_iter().collect()
        }
        fn whole_number(&mut self, name: &str, _: i64, _: i64) -> Option<i64> {
            self.text(name)?.parse().ok()
        }
        fn timestamp(&mut self, _: &str) -> Option<DateTime<Utc>> {
            None
        }
        fn reject(&mut self, name: &str, reason: String) {
            self.1.push((name.to_owned(), reason));
        }
    }

    #[test]
    fn a_range_whose_maximum_is_below_its_minimum_is_rejected_by_the_maximum() {
        let mut source = Values(
            vec![("size_min", "5".into()), ("size_max", "4".into())],
            vec![],
        );
        let filters = Example::read(&mut source, &[]);
        assert_eq!((filters.size_min, filters.size_max), (Some(5), Some(4)));
        assert_eq!(
            source.1,
            [("size_max".into(), "4 is below size_min (5)".into())]
        );
        assert_eq!(Example::without(&filters, "size_min").size_min, None);
    }

    #[test]
    fn terms_are_required_and_counted_and_a_trailing_space_ends_the_last() {
        for (q, problem) in [
            (None, Some("is required")),
            (Some("  "), Some("contains no terms")),
            (Some("aaa bbb ccc ddd eee fff"), Some("6 terms")),
        ] {
            let mut source = Values(q.map(|q| ("q", q.to_owned())).into_iter().collect(), vec![]);
            Terms::read(&mut source, "q");
            assert!(
                source.1[0].1.contains(problem.unwrap()),
                "{q:?}: {:?}",
                source.1
            );
        }
        for (q, prefix_last) in [("a lo", true), ("ada lovelace ", false)] {
            let mut source = Values(vec![("q", q.to_owned())], vec![]);
            let terms = Terms::read(&mut source, "q");
            assert!(source.1.is_empty(), "{q}: {:?}", source.1);
            assert_eq!(terms.prefix_last, prefix_last, "{q}");
            assert_eq!(terms.text(), q.trim_end(), "{q}");
        }
    }

    #[test]
    fn like_patterns_match_wildcards_literally() {
        assert_eq!(
            contains_pattern(Some("50%_a\\b")).unwrap(),
            "%50\\%\\_a\\\\b%"
        );
        assert_eq!(contains_pattern(None), None);
    }
}
