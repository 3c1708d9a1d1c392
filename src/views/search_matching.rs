//! Search's matching and ranking as Rust can read them on one row, for the response cache: what a
//! round changed in `prospect_search_view` leaves a cached search as it was unless one of the
//! changed rows could be among its results before the page's last row.
//!
//! The SQL decides (schema/current.sql: `search_terms()`, `search_plan()`, `search_prospects()`). This
//! reads a row and a query as it does, for ASCII text (case folding and accents beyond ASCII are
//! PostgreSQL's to decide), and errs one way only: a row it says cannot match does not, a score it
//! gives is one the row cannot beat. Typo corrections come from the vocabulary, which this does not
//! hold: any word within a term's typo budget counts as a correction, which only widens what may
//! match. The vocabulary grows with the rows' words, and a new word can change the corrections a
//! query uses (or push one out of the 16 kept), so what the query matches among rows the round did
//! not touch: `may_correct` says when a row's words could do that. Proven against the SQL in
//! tests/api/search_matching.rs.

use super::filters::Terms;

/// A field's score in a match (`search_plan()`): name 3, company 2, job title and industry 1,
/// email 4, times ten.
const NAME: i32 = 3;
const COMPANY: i32 = 2;
const TITLE: i32 = 1;
const EMAIL: i32 = 4;

/// At most this many terms are searched (`search_terms()`).
const MAX_TERMS: usize = 8;

/// One term of a query, as `search_plan()` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    text: String,
    /// A term with `@` matches the email, whole or as its start.
    email: bool,
    /// The last term of a query typed without a trailing space: the start of a word.
    prefix: bool,
    /// The typos it forgives (`search_typo_budget()`).
    budget: usize,
}

/// A search's terms and the fields the caller may match on, as Rust reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    terms: Vec<Term>,
    /// Per field (name, company, title, email): whether the caller may match on it.
    visible: [bool; 4],
}

/// The words of a row that search matches, per field, as `search_vector` holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowWords {
    pub name: Vec<String>,
    pub company: Vec<String>,
    pub title: Vec<String>,
    pub email: Option<String>,
}

/// The text of one row's fields that search reads.
pub struct Searched<'a> {
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub company_name: Option<&'a str>,
    pub job_title: Option<&'a str>,
    pub industry: Option<&'a str>,
    pub email: Option<&'a str>,
}

impl RowWords {
    /// The row's words, or none when a field is not ASCII.
    pub fn of(row: &Searched) -> Option<RowWords> {
        let fields = [
            row.first_name,
            row.last_name,
            row.company_name,
            row.job_title,
            row.industry,
            row.email,
        ];
        if !fields.iter().flatten().all(|text| text.is_ascii()) {
            return None;
        }
        let words_of = |parts: &[Option<&str>]| -> Vec<String> {
            parts
                .iter()
                .flatten()
                .flat_map(|text| words(text))
                .collect()
        };
        Some(RowWords {
            name: words_of(&[row.first_name, row.last_name]),
            company: words_of(&[row.company_name]),
            title: words_of(&[row.job_title, row.industry]),
            email: row.email.map(str::to_ascii_lowercase),
        })
    }

    /// Each word with the score of its field.
    fn scored(&self) -> impl Iterator<Item = (i32, &str)> {
        fn of(rank: i32, words: &[String]) -> impl Iterator<Item = (i32, &str)> {
            words.iter().map(move |word| (rank, word.as_str()))
        }
        of(NAME, &self.name)
            .chain(of(COMPANY, &self.company))
            .chain(of(TITLE, &self.title))
    }
}

/// The words of an ASCII text as `search_words()` makes them: lower case, split at every
/// character that is not a letter or a digit.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_lowercase)
}

/// Whitespace as PostgreSQL's `\s` has it in ASCII (Rust's ASCII whitespace leaves out the
/// vertical tab).
fn is_space(c: char) -> bool {
    c.is_ascii_whitespace() || c == '\x0B'
}

impl Query {
    /// The query of `terms`, or none when its text is not ASCII.
    pub fn of(terms: &Terms) -> Option<Query> {
        let text = terms.text();
        // Other control characters may split terms in PostgreSQL's `\s`: its to decide.
        if !text
            .chars()
            .all(|c| c.is_ascii() && (!c.is_ascii_control() || is_space(c)))
        {
            return None;
        }
        let mut texts: Vec<(String, bool)> = Vec::new();
        for part in text.split(is_space).filter(|part| !part.is_empty()) {
            if part.contains('@') {
                texts.push((part.to_ascii_lowercase(), true));
            } else {
                texts.extend(words(part).map(|word| (word, false)));
            }
        }
        texts.truncate(MAX_TERMS);
        let count = texts.len();
        let hidden = |fields: &[&str]| fields.iter().any(|f| terms.excluded.iter().any(|e| e == f));
        Some(Query {
            terms: texts
                .into_iter()
                .enumerate()
                .map(|(i, (text, email))| Term {
                    budget: if email { 0 } else { typo_budget(&text) },
                    prefix: terms.prefix_last && i + 1 == count,
                    email,
                    text,
                })
                .collect(),
            visible: [
                !hidden(&["first_name", "last_name"]),
                !hidden(&["company_name"]),
                !hidden(&["job_title", "industry"]),
                !hidden(&["email"]),
            ],
        })
    }

    /// Whether the query can match anything: it has terms, and each can match a field the caller
    /// may see (`search_plan()`'s `impossible`).
    fn possible(&self) -> bool {
        !self.terms.is_empty()
            && self.terms.iter().all(|term| {
                if term.email {
                    self.visible[3]
                } else {
                    self.visible[..3].iter().any(|v| *v)
                }
            })
    }

    /// Whether a field (by its score) is one the caller may match on.
    fn sees(&self, rank: i32) -> bool {
        match rank {
            NAME => self.visible[0],
            COMPANY => self.visible[1],
            TITLE => self.visible[2],
            _ => self.visible[3],
        }
    }

    /// The highest score the row could have (`search_prospects()`), none when it cannot match.
    pub fn best_score(&self, row: &RowWords) -> Option<i32> {
        if !self.possible() {
            return None;
        }
        let mut total = 0;
        let mut name_terms = 0;
        for term in &self.terms {
            let (best, on_name) = self.best_match(term, row)?;
            total += best;
            name_terms += usize::from(on_name);
        }
        // Several terms: one more when the terms may have matched every word of the name.
        let exact = self.terms.len() > 1 && name_terms >= row.name.len();
        Some(total + i32::from(exact))
    }

    /// A term's best match in the row (its score) and whether it could match a word of the name.
    fn best_match(&self, term: &Term, row: &RowWords) -> Option<(i32, bool)> {
        if term.email {
            let email = row.email.as_deref().filter(|_| self.visible[3])?;
            let score = word_score(term, email, EMAIL)?;
            return Some((score, false));
        }
        let mut best = None;
        let mut on_name = false;
        for (rank, word) in row.scored().filter(|(rank, _)| self.sees(*rank)) {
            if let Some(score) = word_score(term, word, rank) {
                best = best.max(Some(score));
                on_name |= rank == NAME;
            }
        }
        best.map(|best| (best, on_name))
    }

    /// Whether one of the row's words could be a typo correction of a term: then the vocabulary
    /// may have gained a correction (or pushed one out), and rows the round did not touch may
    /// match differently. Every word counts, those of fields the caller cannot see too (the
    /// vocabulary holds them all).
    pub fn may_correct(&self, row: &RowWords) -> bool {
        self.terms.iter().any(|term| {
            row.scored()
                .any(|(_, word)| word != term.text && within_budget(term, word).is_some())
        })
    }
}

/// A term's score on one word of a field (`search_plan()`'s tiers): 1002 + 10 × field whole, 1000
/// + 10 × field as a prefix, 1000 − 100 × typos + 10 × field as a correction.
fn word_score(term: &Term, word: &str, rank: i32) -> Option<i32> {
    let field = 10 * rank;
    if word == term.text {
        return Some(1002 + field);
    }
    if term.prefix && word.starts_with(&term.text) {
        return Some(1000 + field);
    }
    let typos = within_budget(term, word)?;
    Some(1000 - 100 * typos as i32 + field)
}

/// The typos between a term and another word, when within the term's budget.
fn within_budget(term: &Term, word: &str) -> Option<usize> {
    // Each typo changes the length by one at most.
    if term.budget == 0 || term.text.len().abs_diff(word.len()) > term.budget {
        return None;
    }
    let typos = typos(&term.text, word);
    (typos <= term.budget).then_some(typos)
}

/// `search_typo_budget()`: none under 5 letters or with a digit, one from 5, two from 9.
fn typo_budget(term: &str) -> usize {
    match term.len() {
        _ if term.bytes().any(|b| b.is_ascii_digit()) => 0,
        9.. => 2,
        5.. => 1,
        _ => 0,
    }
}

/// The typos between two ASCII words as the corrections count them: an adjacent transposition
/// one, anything else its Levenshtein distance.
fn typos(a: &str, b: &str) -> usize {
    if is_transposition(a.as_bytes(), b.as_bytes()) {
        return 1;
    }
    levenshtein(a.as_bytes(), b.as_bytes())
}

/// `is_transposition()`: the same length, one adjacent pair swapped.
fn is_transposition(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || a == b {
        return false;
    }
    (1..a.len()).any(|i| {
        a[..i - 1] == b[..i - 1] && a[i - 1] == b[i] && a[i] == b[i - 1] && a[i + 1..] == b[i + 1..]
    })
}

fn levenshtein(a: &[u8], b: &[u8]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(x != y);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Terms {
        Terms {
            terms: text.split_ascii_whitespace().map(str::to_owned).collect(),
            prefix_last: !text.ends_with(' '),
            excluded: vec![],
        }
    }

    fn row(first: &str, last: &str, company: &str, title: &str) -> RowWords {
        RowWords::of(&Searched {
            first_name: Some(first),
            last_name: Some(last),
            company_name: Some(company),
            job_title: Some(title),
            industry: Some("Healthcare"),
            email: Some("Wei.Carter7@acme.example"),
        })
        .unwrap()
    }

    #[test]
    fn distances_count_a_transposition_as_one_typo() {
        assert_eq!(levenshtein(b"kitten", b"sitting"), 3);
        assert_eq!(typos("garcia", "garica"), 1);
        assert_eq!(typos("carter", "cartr"), 1);
        assert_eq!(typo_budget("cartr"), 1);
        assert_eq!(typo_budget("first42"), 0);
        assert_eq!(typo_budget("rodriguez"), 2);
    }

    #[test]
    fn scores_bound_what_the_sql_ranks() {
        let wei = row("Wei", "Carter", "Acme Labs", "Director of Sales");
        let score = |q: &str| Query::of(&terms(q)).unwrap().best_score(&wei);
        // One term: its best tier, no exactness.
        assert_eq!(score("carter"), Some(1032));
        assert_eq!(score("car"), Some(1030));
        assert_eq!(score("car "), None);
        assert_eq!(score("cartr"), Some(930));
        // Several: the sum, and one more when the terms cover every word of the name.
        assert_eq!(score("wei carter"), Some(1032 + 1032 + 1));
        assert_eq!(score("carter acme"), Some(1032 + 1022));
        assert_eq!(score("wei.carter7@acme"), Some(1040));
        assert_eq!(score("nobody"), None);
        assert!(Query::of(&terms("josé")).is_none());
    }

    #[test]
    fn hidden_fields_neither_match_nor_make_a_query_possible() {
        let wei = row("Wei", "Carter", "Acme Labs", "Director of Sales");
        let mut hidden = terms("carter acme");
        hidden.excluded = vec!["last_name".into()];
        assert_eq!(Query::of(&hidden).unwrap().best_score(&wei), None);
        let mut email = terms("wei.carter7@acme.example");
        email.excluded = vec!["email".into()];
        assert_eq!(Query::of(&email).unwrap().best_score(&wei), None);
    }

    #[test]
    fn a_word_within_a_terms_budget_may_be_a_new_correction() {
        let query = Query::of(&terms("smith directr")).unwrap();
        assert!(query.may_correct(&row("Ann", "Smyth", "Acme", "Engineer")));
        assert!(query.may_correct(&row("Ann", "Lee", "Acme", "Director")));
        assert!(!query.may_correct(&row("Ann", "Smith", "Acme", "Engineer")));
    }
}
