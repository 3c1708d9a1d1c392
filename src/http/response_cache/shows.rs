//! What a cached response shows, so that the response cache can tell whether a round that changed
//! some rows changed it: a page shows the rows its filters match between its cursor and its last
//! row (to the end on the last page) and perhaps their total; a single row, its id; facets, the
//! counts of the rows each facet's filters match. A round that changed no such row leaves it as it
//! was; one that only moved a total or a count updates it from the changed rows (minus the old,
//! plus the new); anything else, or anything Rust cannot decide as PostgreSQL would, drops it.

use std::sync::Arc;

use serde_json::Value;

use super::rounds::{Changed, RoundChanges};
use crate::views::order::{FacetCount, MAX_FACET_VALUES, Sort, compare_keys};
use crate::views::{Admits, Image, Place, ReadModel};

/// What a round did to a cached response.
pub enum After {
    /// It shows what it showed: it stays, labelled with the new generation.
    Unchanged,
    /// Only counts moved: the new body (JSON), and what it shows now.
    Updated {
        json: Vec<u8>,
        shows: Arc<dyn Shows>,
    },
    /// A changed row is, or may be, in it: it is rendered anew.
    Dropped(Why),
}

/// Why a cached response was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A changed row is in it.
    Changed,
    /// Rust cannot tell (a row a search's terms may match, a word that may be a new typo
    /// correction, case beyond ASCII, a collation other than byte order, a row not understood, a
    /// facet list cut at its limit).
    Undecided,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Changed => "changed",
            Why::Undecided => "undecided",
        }
    }
}

/// Answers what a round did to one cached response.
pub trait Shows: Send + Sync + 'static {
    /// `body` gives the response's JSON (needed only to update a total: a gzipped body is
    /// inflated only then).
    fn after(&self, round: &RoundChanges, body: &dyn Fn() -> Vec<u8>, bytewise: bool) -> After;
}

/// One row by its id.
pub struct OneRow<M: ReadModel> {
    pub id: String,
    _model: std::marker::PhantomData<M>,
}

impl<M: ReadModel> OneRow<M> {
    pub fn new(id: String) -> Self {
        OneRow {
            id,
            _model: std::marker::PhantomData,
        }
    }
}

impl<M: ReadModel> Shows for OneRow<M> {
    fn after(&self, round: &RoundChanges, _body: &dyn Fn() -> Vec<u8>, _bytewise: bool) -> After {
        let changed = round.as_read_by::<M>();
        for (image, _) in changed.rows() {
            match image {
                Image::Row(row) => match M::id(row) {
                    Some(id) if id == self.id => return After::Dropped(Why::Changed),
                    Some(_) => {}
                    None => return After::Dropped(Why::Undecided),
                },
                Image::Parent(_) => {}
                Image::Unknown => return After::Dropped(Why::Undecided),
            }
        }
        After::Unchanged
    }
}

/// The parent a scoped list is of (`/companies/{company_id}/prospects`): its id, and a filter that
/// names only it.
pub struct Parent<M: ReadModel> {
    pub id: String,
    pub filters: M::Filters,
}

/// A page of a list.
pub struct PageShown<M: ReadModel> {
    /// The filters, the role's scope included.
    pub filters: M::Filters,
    /// The role's scope and the filters have nothing in common: the page is empty whatever changes.
    pub matches_nothing: bool,
    pub sort: Sort<M::Sort>,
    /// The cursor's key (the previous page's last row); none on the first page.
    pub after: Option<Value>,
    /// The key of the page's last row when there is a next page; none when the page runs to the end.
    pub last: Option<Value>,
    /// A change to a scoped list's parent's rows may turn the list into a 404.
    pub parent: Option<Parent<M>>,
    /// With `count=exact`: the total, updated from the changed rows.
    pub total: Option<i64>,
    /// With `count=estimated`: the planner's estimate, which any matching change may move.
    pub estimated: bool,
}

impl<M: ReadModel> PageShown<M> {
    /// Whether a row so placed falls in the page: after its cursor, up to its last row (`None`:
    /// it may).
    fn in_range(&self, place: &Place, bytewise: bool) -> Option<bool> {
        use std::cmp::Ordering;
        let (key, exactly) = match place {
            Place::Exactly(key) => (key, true),
            Place::NoEarlierThan(key) => (key, false),
            Place::Unknown => return None,
        };
        if let Some(last) = &self.last
            && compare_keys(self.sort, key, last, bytewise)? == Ordering::Greater
        {
            return Some(false);
        }
        if !exactly {
            // Anywhere from the start up to its place: only past the last row is it known to be out.
            return None;
        }
        if let Some(after) = &self.after
            && compare_keys(self.sort, key, after, bytewise)? != Ordering::Greater
        {
            return Some(false);
        }
        Some(true)
    }

    /// What one changed row does: nothing, moves the total by `sign`, or drops the page.
    fn one_row(&self, image: &Image<M::Row>, sign: i64, bytewise: bool) -> Result<i64, Why> {
        let row = match image {
            Image::Row(row) => row,
            Image::Parent(id) => {
                let of_parent = self.parent.as_ref().is_some_and(|parent| parent.id == *id);
                return if of_parent { Err(Why::Changed) } else { Ok(0) };
            }
            Image::Unknown => return Err(Why::Undecided),
        };
        if let Some(parent) = &self.parent
            && M::admits(&parent.filters, row) != Admits::No
        {
            // The parent's rows changed: it may have gone, whatever the page shows.
            return Err(Why::Changed);
        }
        if M::moves_others(&self.filters, row) {
            return Err(Why::Undecided);
        }
        let admits = M::admits(&self.filters, row);
        if admits == Admits::No {
            return Ok(0);
        }
        if self.estimated {
            return Err(Why::Undecided);
        }
        match self.in_range(&M::place(&self.filters, self.sort, row), bytewise) {
            None => return Err(Why::Undecided),
            Some(true) if admits == Admits::Yes => return Err(Why::Changed),
            Some(true) => return Err(Why::Undecided),
            Some(false) => {}
        }
        match (self.total, admits) {
            (None, _) => Ok(0),
            (Some(_), Admits::Yes) => Ok(sign),
            (Some(_), _) => Err(Why::Undecided),
        }
    }
}

impl<M: ReadModel> Shows for PageShown<M>
where
    M::Filters: Clone,
{
    fn after(&self, round: &RoundChanges, body: &dyn Fn() -> Vec<u8>, bytewise: bool) -> After {
        if self.matches_nothing {
            return After::Unchanged;
        }
        let changed = round.as_read_by::<M>();
        let mut moved = 0;
        for (image, sign) in changed.rows() {
            match self.one_row(image, sign, bytewise) {
                Ok(by) => moved += by,
                Err(why) => return After::Dropped(why),
            }
        }
        match self.total {
            Some(total) if moved != 0 => match with_total(&body(), total + moved) {
                Some(json) => After::Updated {
                    json,
                    shows: Arc::new(PageShown::<M> {
                        filters: self.filters.clone(),
                        matches_nothing: false,
                        sort: self.sort,
                        after: self.after.clone(),
                        last: self.last.clone(),
                        parent: self.parent.as_ref().map(|parent| Parent {
                            id: parent.id.clone(),
                            filters: parent.filters.clone(),
                        }),
                        total: Some(total + moved),
                        estimated: false,
                    }),
                },
                None => After::Dropped(Why::Undecided),
            },
            _ => After::Unchanged,
        }
    }
}

/// A page's JSON with another `total`: it is the page's last member (`list::Page`).
fn with_total(body: &[u8], total: i64) -> Option<Vec<u8>> {
    const KEY: &[u8] = b"\"total\":";
    let at = body.windows(KEY.len()).rposition(|window| window == KEY)?;
    let rest = &body[at + KEY.len()..];
    let digits = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'-')
        .count();
    if &rest[digits..] != b"}" {
        return None;
    }
    let mut json = Vec::with_capacity(body.len() + 4);
    json.extend_from_slice(&body[..at + KEY.len()]);
    json.extend_from_slice(total.to_string().as_bytes());
    json.push(b'}');
    Some(json)
}

/// One facet's counts, under the list's filters without its own (`None`: the role's scope leaves
/// nothing to count).
pub struct FacetCounts<M: ReadModel> {
    pub facet: M::Facet,
    pub filters: Option<M::Filters>,
    pub counts: Vec<FacetCount>,
}

/// The counts of facets.
pub struct FacetsShown<M: ReadModel> {
    pub facets: Vec<FacetCounts<M>>,
    /// Writes the body as the facets endpoint does.
    pub render: fn(&[FacetCounts<M>]) -> Option<Vec<u8>>,
}

impl<M: ReadModel> Shows for FacetsShown<M>
where
    M::Filters: Clone,
{
    fn after(&self, round: &RoundChanges, _body: &dyn Fn() -> Vec<u8>, bytewise: bool) -> After {
        let changed = round.as_read_by::<M>();
        let mut facets = Vec::with_capacity(self.facets.len());
        let mut moved = false;
        for shown in &self.facets {
            let counts = match &shown.filters {
                None => None,
                Some(filters) => {
                    match recount::<M>(shown.facet, filters, &shown.counts, &changed, bytewise) {
                        Ok(counts) => counts,
                        Err(why) => return After::Dropped(why),
                    }
                }
            };
            moved |= counts.is_some();
            facets.push(FacetCounts {
                facet: shown.facet,
                filters: shown.filters.clone(),
                counts: counts.unwrap_or_else(|| shown.counts.clone()),
            });
        }
        if !moved {
            return After::Unchanged;
        }
        match (self.render)(&facets) {
            Some(json) => After::Updated {
                json,
                shows: Arc::new(FacetsShown::<M> {
                    facets,
                    render: self.render,
                }),
            },
            None => After::Dropped(Why::Undecided),
        }
    }
}

/// A facet's counts after the changed rows (`None`: unchanged), ordered as its SQL orders them:
/// most frequent first, then by value, at most `MAX_FACET_VALUES`.
fn recount<M: ReadModel>(
    facet: M::Facet,
    filters: &M::Filters,
    counts: &[FacetCount],
    changed: &Changed<M>,
    bytewise: bool,
) -> Result<Option<Vec<FacetCount>>, Why> {
    let mut moves: Vec<(String, i64)> = Vec::new();
    for (image, sign) in changed.rows() {
        let row = match image {
            Image::Row(row) => row,
            Image::Parent(_) => continue,
            Image::Unknown => return Err(Why::Undecided),
        };
        if M::moves_others(filters, row) {
            return Err(Why::Undecided);
        }
        match M::admits(filters, row) {
            Admits::No => continue,
            Admits::Unsure => return Err(Why::Undecided),
            Admits::Yes => {}
        }
        match M::facet_value(facet, row) {
            None => return Err(Why::Undecided),
            Some(None) => {}
            Some(Some(value)) => match moves.iter_mut().find(|(v, _)| v == value) {
                Some((_, by)) => *by += sign,
                None => moves.push((value.to_owned(), sign)),
            },
        }
    }
    moves.retain(|(_, by)| *by != 0);
    if moves.is_empty() {
        return Ok(None);
    }
    if !bytewise {
        // Ties are ordered by value, which only a byte-order collation orders as Rust does.
        return Err(Why::Undecided);
    }
    let full = counts.len() as i64 >= MAX_FACET_VALUES;
    let mut counts = counts.to_vec();
    for (value, by) in moves {
        match counts.iter_mut().find(|c| c.value == value) {
            // A listed value losing rows might fall below one past the limit, which is not known.
            Some(_) if full && by < 0 => return Err(Why::Undecided),
            Some(count) => count.count += by,
            // A value past the limit is not known: it may enter.
            None if full => return Err(Why::Undecided),
            None if by > 0 => counts.push(FacetCount { value, count: by }),
            None => return Err(Why::Undecided),
        }
    }
    counts.retain(|c| c.count > 0);
    counts.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.value.as_bytes().cmp(b.value.as_bytes()))
    });
    Ok(Some(counts))
}
