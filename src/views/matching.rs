//! The filters' SQL conditions as Rust can check them on a row (`ReadModel::admits`): what the
//! response cache asks of each row a round changed. Each helper is one shape of condition the
//! statements use, and answers exactly what PostgreSQL would, or `Unsure` where Rust cannot tell
//! (case folding beyond ASCII). A NULL never matches, as in SQL.

use super::Admits;

/// `($n::text[] IS NULL OR column = ANY ($n))`.
pub fn in_any_of(values: &[String], column: Option<&str>) -> Admits {
    if values.is_empty() {
        return Admits::Yes;
    }
    Admits::from(column.is_some_and(|column| values.iter().any(|value| value == column)))
}

/// `($n::text IS NULL OR column = $n)`: equality is byte equality under any deterministic
/// collation.
pub fn same(value: &Option<String>, column: Option<&str>) -> Admits {
    match value {
        None => Admits::Yes,
        Some(value) => Admits::from(column == Some(value.as_str())),
    }
}

/// `($n::text IS NULL OR lower(column) = lower($n))`.
pub fn ascii_equal(value: &Option<String>, column: Option<&str>) -> Admits {
    match (value, column) {
        (None, _) => Admits::Yes,
        (Some(_), None) => Admits::No,
        (Some(value), Some(column)) if value.is_ascii() && column.is_ascii() => {
            Admits::from(value.eq_ignore_ascii_case(column))
        }
        _ => Admits::Unsure,
    }
}

/// `($n::text IS NULL OR column ILIKE '%' || $n || '%')`, the pattern's wildcards escaped.
pub fn ascii_contains(value: &Option<String>, column: Option<&str>) -> Admits {
    match (value, column) {
        (None, _) => Admits::Yes,
        (Some(_), None) => Admits::No,
        (Some(value), Some(column)) if value.is_ascii() && column.is_ascii() => Admits::from(
            column
                .to_ascii_lowercase()
                .contains(&value.to_ascii_lowercase()),
        ),
        _ => Admits::Unsure,
    }
}

/// `($n IS NULL OR column >= $n)` on a whole number.
pub fn at_least(minimum: Option<i64>, column: Option<i64>) -> Admits {
    match minimum {
        None => Admits::Yes,
        Some(minimum) => Admits::from(column.is_some_and(|column| column >= minimum)),
    }
}

/// The revenue bounds, written on the revenue order's expression (`COALESCE(revenue, i64::MIN)`,
/// which no bound admits): `>= GREATEST($n, i64::MIN + 1)`.
pub fn revenue_at_least(minimum: Option<i64>, revenue: Option<i64>) -> Admits {
    at_least(minimum.map(|minimum| minimum.max(i64::MIN + 1)), revenue)
}

/// `BETWEEN i64::MIN + 1 AND $n`.
pub fn revenue_at_most(maximum: Option<i64>, revenue: Option<i64>) -> Admits {
    match maximum {
        None => Admits::Yes,
        Some(maximum) => {
            Admits::from(revenue.is_some_and(|revenue| (i64::MIN + 1..=maximum).contains(&revenue)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_never_match_and_absent_filters_always_do() {
        assert_eq!(in_any_of(&[], None), Admits::Yes);
        assert_eq!(in_any_of(&["A".into()], None), Admits::No);
        assert_eq!(in_any_of(&["A".into(), "B".into()], Some("B")), Admits::Yes);
        assert_eq!(same(&Some("a".into()), Some("A")), Admits::No);
        assert_eq!(
            ascii_equal(&Some("A@X.example".into()), Some("a@x.example")),
            Admits::Yes
        );
        assert_eq!(
            ascii_equal(&Some("É@x".into()), Some("é@x")),
            Admits::Unsure
        );
        assert_eq!(
            ascii_contains(&Some("ENG".into()), Some("Senior engineer")),
            Admits::Yes
        );
        assert_eq!(ascii_contains(&Some("x".into()), None), Admits::No);
        assert_eq!(revenue_at_least(Some(i64::MIN), None), Admits::No);
        assert_eq!(
            revenue_at_least(Some(i64::MIN), Some(i64::MIN + 1)),
            Admits::Yes
        );
        assert_eq!(revenue_at_most(Some(10), Some(i64::MIN)), Admits::No);
        assert_eq!(revenue_at_most(Some(10), Some(10)), Admits::Yes);
    }
}
