//! What one role may do with one read model, worked out once from the policy's column names and the
//! model's declarations (its row's fields, what each filter and order reads, its column names): the
//! fields to leave out of rows, the parameters it may not use, and its row scope in the model's own
//! filters. Every read of the model goes through it, in every format and for the cache.

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::policy::Role;
use crate::views::filters::{FilterSet, FilterSpec, Restricted};
use crate::views::order::{Facet, Sort, SortKey};
use crate::views::{ReadModel, ReadModelVisitor, visit_read_models};

/// The column a field of `M`'s rows is, as policies name it.
pub fn column_of<M: ReadModel>(field: &str) -> &str {
    M::COLUMNS
        .iter()
        .find(|(own, _)| *own == field)
        .map_or(field, |(_, column)| column)
}

/// The fields of `M`'s rows, as its schema declares them.
pub fn row_fields<M: ReadModel>() -> Vec<String> {
    use utoipa::openapi::{RefOr, Schema};
    match <M::Row as utoipa::PartialSchema>::schema() {
        RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Every column a policy may name: those of every read model's rows, filters and orders.
pub fn known_columns() -> BTreeSet<String> {
    struct Columns(BTreeSet<String>);
    impl ReadModelVisitor for Columns {
        fn visit<M: ReadModel>(&mut self) {
            let fields = row_fields::<M>();
            let read = M::Filters::SPECS.iter().flat_map(|spec| spec.reads.iter());
            let sorted = M::Sort::ALL.iter().flat_map(|(_, key)| key.reads().iter());
            let names = fields
                .iter()
                .map(String::as_str)
                .chain(read.chain(sorted).copied());
            self.0
                .extend(names.map(|field| column_of::<M>(field).to_owned()));
        }
    }
    let mut columns = Columns(BTreeSet::new());
    visit_read_models(&mut columns);
    columns.0
}

#[derive(Debug, Default)]
pub struct Restriction {
    /// The role's name and what its responses depend on (`Role::fingerprint`).
    pub role: String,
    pub fingerprint: String,
    /// Row fields the role may not see.
    pub hidden_fields: Vec<String>,
    /// The fields it may see, in the row's order, when it may not see them all.
    pub visible_fields: Option<Vec<String>>,
    /// Filters (and so facets) it may not use, with the column each would reveal.
    forbidden_filters: BTreeMap<&'static str, String>,
    /// The row scope, as the model's filters and their allowed values.
    scope: Vec<(&'static str, Vec<String>)>,
    /// The row scope, as the fields of the model's rows and their allowed values (for rows read
    /// by id, which no filter selects).
    row_scope: Vec<(String, Vec<String>)>,
    /// A scope column the model has no filter to restrict by: the role may not read the model.
    pub unscopable: Option<String>,
    pub max_limit: Option<i64>,
    /// The model's fields whose column is named otherwise (`ReadModel::COLUMNS`).
    aliases: &'static [(&'static str, &'static str)],
}

/// A parameter the role may not use, and why.
pub struct Refusal {
    pub name: String,
    pub reason: String,
}

impl Restriction {
    /// What `role` may do with `M` (worked out once per role and model).
    pub fn of<M: ReadModel>(role: &Role) -> Arc<Restriction> {
        let model = TypeId::of::<M>();
        if let Some(found) = role.restrictions.read().expect("not poisoned").get(&model) {
            return found.clone();
        }
        let restriction = Arc::new(Restriction::work_out::<M>(role));
        let mut cache = role.restrictions.write().expect("not poisoned");
        cache.entry(model).or_insert(restriction).clone()
    }

    fn work_out<M: ReadModel>(role: &Role) -> Restriction {
        let hidden = |field: &str| role.hide.contains(column_of::<M>(field));
        let fields = row_fields::<M>();
        let hidden_fields: Vec<String> = fields.iter().filter(|f| hidden(f)).cloned().collect();
        let visible_fields = (!hidden_fields.is_empty())
            .then(|| fields.iter().filter(|f| !hidden(f)).cloned().collect());
        let forbidden_filters = M::Filters::SPECS
            .iter()
            .filter_map(|spec| {
                let column = spec.reads.iter().find(|field| hidden(field))?;
                // A search leaves hidden fields out of what it matches instead (`FilterSet::hide`).
                let searches = matches!(spec.kind, crate::views::filters::FilterKind::Terms { .. });
                (!searches).then(|| (spec.name, column_of::<M>(column).to_owned()))
            })
            .collect();
        let mut scope = Vec::new();
        let mut unscopable = None;
        for (column, values) in &role.rows {
            match scoping_filter::<M>(column, values) {
                Some(filter) => scope.push((filter, values.clone())),
                None => unscopable = Some(column.clone()),
            }
        }
        let row_scope = role
            .rows
            .iter()
            .map(|(column, values)| {
                let field = fields.iter().find(|f| column_of::<M>(f) == column);
                // A scope column the rows do not show: no row read by id can be shown.
                let field = field
                    .cloned()
                    .unwrap_or_else(|| format!("(no field {column})"));
                (field, values.clone())
            })
            .collect();
        Restriction {
            role: role.name.clone(),
            fingerprint: role.fingerprint.clone(),
            hidden_fields,
            visible_fields,
            forbidden_filters,
            scope,
            row_scope,
            unscopable,
            max_limit: role.max_limit,
            aliases: M::COLUMNS,
        }
    }

    fn column<'f>(&self, field: &'f str) -> &'f str {
        self.aliases
            .iter()
            .find(|(own, _)| *own == field)
            .map_or(field, |(_, column)| column)
    }

    fn refusal(&self, name: &str, field: &str) -> Refusal {
        Refusal {
            name: name.to_owned(),
            reason: format!(
                "your role ({}) may not see {}",
                self.role,
                self.column(field)
            ),
        }
    }

    pub fn sees_everything(&self) -> bool {
        self.hidden_fields.is_empty() && self.scope.is_empty() && self.unscopable.is_none()
    }

    /// Why the role may not use the filter `name`, if it may not.
    pub fn refuses_filter(&self, name: &str) -> Option<Refusal> {
        let column = self.forbidden_filters.get(name)?;
        Some(Refusal {
            name: name.to_owned(),
            reason: format!("your role ({}) may not see {column}", self.role),
        })
    }

    /// Why the role may not read in this order (asked for or the default), if it may not: the
    /// order would tell the hidden values apart, and its cursors carry them.
    pub fn refuses_sort<K: SortKey>(&self, sort: Sort<K>) -> Option<Refusal> {
        let hidden = |field: &&&str| self.hidden_fields.iter().any(|h| h == **field);
        let field = sort.key.reads().iter().find(hidden)?;
        let other = if K::CHOSEN_BY_CLIENT {
            "; choose another sort"
        } else {
            ""
        };
        Some(Refusal {
            name: "sort".to_owned(),
            reason: format!(
                "the order {} reads {}, which your role ({}) may not see{other}",
                sort.name(),
                self.column(field),
                self.role
            ),
        })
    }

    /// Why the role may not ask for these fields, if it may not.
    pub fn refuses_fields(&self, asked: &[String]) -> Option<Refusal> {
        let field = asked.iter().find(|f| self.hidden_fields.contains(f))?;
        Some(self.refusal("fields", field))
    }

    /// Why the role may not count facet `F`, if it may not.
    pub fn refuses_facet<F: Facet>(&self, facet: F) -> Option<Refusal> {
        let refusal = self.refuses_filter(facet.name())?;
        Some(Refusal {
            name: "facet".to_owned(),
            ..refusal
        })
    }

    /// Why the role may not read pages of more than `limit` rows, if it may not.
    pub fn refuses_limit(&self, limit: i64) -> Option<Refusal> {
        let max = self.max_limit.filter(|max| limit > *max)?;
        Some(Refusal {
            name: "limit".to_owned(),
            reason: format!("your role ({}) reads at most {max} rows a page", self.role),
        })
    }

    /// The rows per page without `limit`: the default, or the role's cap if lower.
    pub fn default_limit(&self, default: i64) -> i64 {
        self.max_limit.map_or(default, |max| max.min(default))
    }

    /// `filters` as this role may run them: its row scope ANDed in, hidden fields left out of what
    /// a search matches. None when no row can match.
    pub fn apply<S: FilterSet>(&self, filters: &S) -> Option<S> {
        let mut scoped = filters.clone();
        if !self.hidden_fields.is_empty() {
            let hidden: Vec<&str> = self.hidden_fields.iter().map(String::as_str).collect();
            scoped.hide(&hidden);
        }
        for (filter, allowed) in &self.scope {
            if scoped.restrict(filter, allowed) != Restricted::Narrowed {
                return None;
            }
        }
        Some(scoped)
    }

    pub fn has_scope(&self) -> bool {
        !self.scope.is_empty()
    }

    /// Whether `row` (a row of the model, as JSON) is within the row scope.
    pub fn admits(&self, row: &serde_json::Value) -> bool {
        self.row_scope.iter().all(|(field, allowed)| {
            row.get(field)
                .and_then(serde_json::Value::as_str)
                .is_some_and(|value| allowed.iter().any(|a| a == value))
        })
    }
}

/// The filter of `M` that restricts rows to `values` of `column`: one reading that column alone,
/// that can hold the values.
fn scoping_filter<M: ReadModel>(column: &str, values: &[String]) -> Option<&'static str> {
    let reads_column =
        |spec: &&FilterSpec| spec.reads.len() == 1 && column_of::<M>(spec.reads[0]) == column;
    M::Filters::SPECS
        .iter()
        .filter(reads_column)
        .find(|spec| M::Filters::default().restrict(spec.name, values) == Restricted::Narrowed)
        .map(|spec| spec.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::policy::Policy;
    use crate::views::company_prospects::{CompanyProspects, ProspectFilters};
    use crate::views::company_summaries::{CompanyFilters, CompanySummaries};
    use crate::views::prospect_search::ProspectSearch;

    fn role(text: &str) -> Arc<Role> {
        let policy = Policy::parse(&format!("[roles.r]\n{text}"), &known_columns()).unwrap();
        policy.role("r").unwrap()
    }

    #[test]
    fn a_hidden_column_is_left_out_of_rows_and_refused_as_a_filter_in_every_model() {
        let role = role("hide = [\"email\", \"company_country\"]");
        let prospects = Restriction::work_out::<CompanyProspects>(&role);
        assert_eq!(prospects.hidden_fields, ["email", "company_country"]);
        assert!(prospects.refuses_filter("email").is_some());
        assert!(prospects.refuses_filter("company_country").is_some());
        assert!(prospects.refuses_filter("industry").is_none());
        let companies = Restriction::work_out::<CompanySummaries>(&role);
        assert_eq!(
            companies.hidden_fields,
            ["country"],
            "a company's country is company_country"
        );
        assert!(companies.refuses_filter("country").is_some());
        let search = Restriction::work_out::<ProspectSearch>(&role);
        assert!(
            search.refuses_filter("q").is_none(),
            "a search leaves the field out instead"
        );
        let mut filters = crate::views::prospect_search::SearchFilters::default();
        filters = search.apply(&filters).unwrap();
        assert_eq!(filters.q.excluded, ["email"]);
    }

    #[test]
    fn a_row_scope_narrows_every_model_and_cannot_be_widened() {
        let role = role("rows = { company_country = \"Germany\" }");
        let prospects = Restriction::work_out::<CompanyProspects>(&role);
        let scoped = prospects.apply(&ProspectFilters::default()).unwrap();
        assert_eq!(scoped.company_country.as_deref(), Some("Germany"));
        let asked_for_france = ProspectFilters {
            company_country: Some("France".into()),
            ..Default::default()
        };
        assert!(
            prospects.apply(&asked_for_france).is_none(),
            "matches nothing"
        );
        let companies = Restriction::work_out::<CompanySummaries>(&role);
        let scoped = companies.apply(&CompanyFilters::default()).unwrap();
        assert_eq!(scoped.country.as_deref(), Some("Germany"));
        let several = self::role("rows = { company_country = [\"Germany\", \"Austria\"] }");
        let companies = Restriction::work_out::<CompanySummaries>(&several);
        assert_eq!(companies.unscopable.as_deref(), Some("company_country"));
        let by_industry = self::role("rows = { industry = [\"Software\", \"Retail\"] }");
        let prospects = Restriction::work_out::<CompanyProspects>(&by_industry);
        let asked = ProspectFilters {
            industry: vec!["Retail".into(), "Media".into()],
            ..Default::default()
        };
        assert_eq!(prospects.apply(&asked).unwrap().industry, ["Retail"]);
    }
}
