#!/usr/bin/env python3
"""How well `GET /search` finds the person meant, against a reference engine over the same rows:
`bench/relevance.py [--prospects 50000] [--queries 200] [--binary PATH]`.

The rows are not the project's demo data: names, companies and job titles come from Faker in ten
locales (accents included), loaded into a fresh database (`prospect_api_relevance`) that a real
`prospect-api serve` reads. The queries are what people type looking for one prospect, seven kinds:

  full_name      "Zoë Łukasiewicz"        the name as written
  name_company   "łukasiewicz kowalski"   the last name and a word of the company's name
  last_prefix    "zoë łuk"                the first name and the start of the last (type-ahead)
  typo           "zoë łukasiewciz"        one typo in a last name of 5+ letters
  no_accents     "zoe lukasiewicz"        a name with accents, typed without them
  last_first     "łukasiewicz zoë"        last name first
  email          "zoe.lukasiewicz12@…"    the exact email

A result is relevant when it is the person meant or one nobody could tell apart from it by the
query (the same name, folded; for name_company the same last name at a company with that word; for
email only the one). Per kind: success@10 (a relevant row in the first ten) and MRR@10 (1 / rank
of the first relevant row, 0 past ten), for the API and for tantivy (BM25; per term, each field's
word, fuzzy within the same typo budget, the last term also as a prefix; ASCII folding; name fields
boosted over company over job title and industry), plus each one's latency with one client.
Writes the `relevance` section of bench/RESULTS.md.

Installs Faker and tantivy (PyPI) when missing. Needs psql and a release build (cargo build --release).
"""

import argparse
import datetime
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (server, psql, results file)


def ensure_packages():
    try:
        import faker  # noqa: F401
        import tantivy  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "faker", "tantivy"], check=True)


LOCALES = {"en_US": "United States", "de_DE": "Germany", "fr_FR": "France", "es_ES": "Spain",
           "it_IT": "Italy", "pt_BR": "Brazil", "pl_PL": "Poland", "sv_SE": "Sweden", "tr_TR": "Turkey",
           "cs_CZ": "Czechia"}
INDUSTRIES = ["Software", "Healthcare", "Retail", "Energy", "Logistics", "Media", "Insurance", "Education"]
KINDS = ["full_name", "name_company", "last_prefix", "typo", "no_accents", "last_first", "email"]


# Letters that are no letter plus an accent, so NFKD leaves them whole.
LETTERS = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ß": "ss", "æ": "ae",
                         "Æ": "AE", "œ": "oe", "Œ": "OE", "ı": "i", "þ": "th", "Þ": "Th"})


def fold(text):
    """Accents off, lower case: how a person types a name on a keyboard without them."""
    decomposed = unicodedata.normalize("NFKD", text.translate(LETTERS))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def words(text):
    return [w for w in "".join(c if c.isalnum() else " " for c in fold(text)).split() if w]


def generate(prospects, seed):
    from faker import Faker
    companies, people = [], []
    fakers = {locale: Faker(locale) for locale in LOCALES}
    for locale, faker in fakers.items():
        faker.seed_instance(seed)
    per_company = 10
    for c in range(prospects // per_company):
        locale = list(LOCALES)[c % len(LOCALES)]
        faker = fakers[locale]
        name = faker.company()
        domain = "".join(words(name)[:2]) + f"{c}.example"
        companies.append((f"c{c}", name, INDUSTRIES[c % len(INDUSTRIES)], LOCALES[locale], domain))
        for p in range(per_company):
            first, last = faker.first_name(), faker.last_name()
            email = f"{'.'.join(words(first) + words(last))}{p}@{domain}"
            people.append((f"p{c}_{p}", f"c{c}", first, last, email, faker.job()[:80]))
    return companies, people


def load(url, companies, people, workdir):
    for table, columns, rows in (('"Company"', '("id", "name", "industry", "country", "domain")', companies),
                                 ('"Prospect"', '("id", "companyId", "firstName", "lastName", "email", "jobTitle")',
                                  people)):
        path = os.path.join(workdir, "rows.tsv")
        with open(path, "w") as f:
            for row in rows:
                f.write("\t".join(v.replace("\t", " ").replace("\\", "") for v in row) + "\n")
        run.sh("psql", url, "-v", "ON_ERROR_STOP=1", "-qc", f"\\copy {table} {columns} FROM '{path}'")


def typo(word, rng):
    i = rng.randrange(1, len(word) - 1)
    op = rng.choice(["delete", "substitute", "transpose", "insert"])
    if op == "delete":
        return word[:i] + word[i + 1:]
    if op == "transpose":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    letter = rng.choice("aeiounrst".replace(word[i], ""))
    return word[:i] + letter + word[i + (op == "substitute"):]


def queries(people, companies, per_kind, seed):
    """(kind, query, relevant ids) for each kind, the targets drawn at random."""
    rng = random.Random(seed)
    company_name = {c[0]: c[1] for c in companies}
    by_name = {}
    for p in people:
        by_name.setdefault((fold(p[2]), fold(p[3])), set()).add(p[0])
    out = []
    for kind in KINDS:
        pool = people
        if kind == "typo":
            pool = [p for p in people if len(words(p[3])) == 1 and len(words(p[3])[0]) >= 5]
        if kind == "no_accents":
            pool = [p for p in people if fold(p[2] + p[3]) != (p[2] + p[3]).lower()]
        for p in rng.sample(pool, min(per_kind, len(pool))):
            pid, company, first, last, email = p[0], p[1], p[2], p[3], p[4]
            same_name = by_name[(fold(first), fold(last))]
            if kind == "full_name":
                out.append((kind, f"{first} {last}", same_name))
            elif kind == "last_first":
                out.append((kind, f"{last} {first}", same_name))
            elif kind == "no_accents":
                out.append((kind, fold(f"{first} {last}"), same_name))
            elif kind == "last_prefix":
                out.append((kind, f"{first} {last[:3]}", same_name))
            elif kind == "typo":
                out.append((kind, f"{first} {typo(words(last)[0], rng)}", same_name))
            elif kind == "email":
                out.append((kind, email, {pid}))
            elif kind == "name_company":
                word = max(words(company_name[company]), key=len)
                relevant = {q[0] for q in people if fold(q[3]) == fold(last) and word in words(company_name[q[1]])}
                out.append((kind, f"{last} {word}", relevant))
    return out


class Reference:
    """tantivy over the same rows."""

    def __init__(self, companies, people):
        import tantivy
        self.tantivy = tantivy
        folded = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(
            tantivy.Filter.lowercase()).filter(tantivy.Filter.ascii_fold()).build()
        whole = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.raw()).filter(tantivy.Filter.lowercase()).build()
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("id", stored=True, tokenizer_name="raw")
        self.fields = {"first_name": 3.0, "last_name": 3.0, "company_name": 2.0, "job_title": 1.0, "industry": 1.0}
        for field in self.fields:
            builder.add_text_field(field, tokenizer_name="folded")
        builder.add_text_field("email", tokenizer_name="whole")
        self.schema = builder.build()
        self.index = tantivy.Index(self.schema)
        self.index.register_tokenizer("folded", folded)
        self.index.register_tokenizer("whole", whole)
        self.analyzer = folded
        company = {c[0]: c for c in companies}
        writer = self.index.writer()
        for pid, cid, first, last, email, job in people:
            writer.add_document(tantivy.Document(id=pid, first_name=first, last_name=last, email=email.lower(),
                                                 company_name=company[cid][1], job_title=job,
                                                 industry=company[cid][2]))
        writer.commit()
        self.index.reload()
        self.searcher = self.index.searcher()

    def query(self, text):
        t, Occur = self.tantivy, self.tantivy.Occur
        parts = text.split()
        must = []
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            if "@" in part:
                must.append((Occur.Must, t.Query.term_query(self.schema, "email", part.lower())))
                continue
            for token in self.analyzer.analyze(part):
                distance = 2 if len(token) >= 9 else 1 if len(token) >= 5 else 0
                alternatives = []
                for field, boost in self.fields.items():
                    alternatives.append((Occur.Should, t.Query.boost_query(
                        t.Query.term_query(self.schema, field, token), boost)))
                    if distance or last:
                        alternatives.append((Occur.Should, t.Query.boost_query(t.Query.fuzzy_term_query(
                            self.schema, field, token, distance=distance, transposition_cost_one=True,
                            prefix=last), boost * 0.5)))
                must.append((Occur.Must, t.Query.boolean_query(alternatives)))
        return t.Query.boolean_query(must)

    def search(self, text):
        hits = self.searcher.search(self.query(text), 10).hits
        return [self.searcher.doc(address)["id"][0] for _, address in hits]


def api_search(text):
    status, _, body = run.http_get(f"/search?q={run.quote(text)}&limit=10&fields=prospect_id")
    if status != 200:
        return None
    import json
    return [row["prospect_id"] for row in json.loads(body)["data"]]


def score(found, relevant):
    """(success@10, reciprocal rank@10)."""
    for rank, pid in enumerate(found or [], start=1):
        if pid in relevant:
            return 1, 1 / rank
    return 0, 0.0


def evaluate(name, search, qs):
    figures = {}
    for kind in KINDS + ["overall"]:
        figures[kind] = {"n": 0, "success": 0, "rr": 0.0, "refused": 0, "ms": []}
    for kind, text, relevant in qs:
        started = time.perf_counter()
        found = search(text)
        elapsed = (time.perf_counter() - started) * 1000
        hit, rr = score(found, relevant)
        for key in (kind, "overall"):
            f = figures[key]
            f["n"] += 1
            f["success"] += hit
            f["rr"] += rr
            f["refused"] += found is None
            f["ms"].append(elapsed)
    print(f"  {name}: MRR@10 {figures['overall']['rr'] / figures['overall']['n']:.3f}", flush=True)
    return figures


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def table(api, reference):
    lines = ["| kind | queries | API success@10 | API MRR@10 | tantivy success@10 | tantivy MRR@10 | API refused |",
             "|---|---|---|---|---|---|---|"]
    for kind in KINDS + ["overall"]:
        a, r = api[kind], reference[kind]
        n = a["n"] or 1
        lines.append(f"| {kind} | {a['n']} | {a['success'] / n:.3f} | {a['rr'] / n:.3f} | "
                     f"{r['success'] / n:.3f} | {r['rr'] / n:.3f} | {a['refused']} |")
    for name, f in (("API (HTTP, one client, cache off)", api["overall"]), ("tantivy (in process)", reference["overall"])):
        lines.append("")
        lines.append(f"- {name}: p50 {percentile(f['ms'], 50):.1f} ms, p99 {percentile(f['ms'], 99):.1f} ms")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prospects", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=200, help="per kind")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--binary", default=run.BINARY)
    args = parser.parse_args()
    run.BINARY = args.binary
    ensure_packages()

    server = os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
    url = f"{server}/prospect_api_relevance"
    run.sh("psql", f"{server}/postgres", "-qc", "DROP DATABASE IF EXISTS prospect_api_relevance")
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn")
    subprocess.run([args.binary, "migrate"], check=True, env=env, capture_output=True)
    print(f"generating {args.prospects} prospects in {len(LOCALES)} locales ...", flush=True)
    companies, people = generate(args.prospects, args.seed)
    with tempfile.TemporaryDirectory() as workdir:
        load(url, companies, people, workdir)
    subprocess.run([args.binary, "refresh"], check=True, env=env, capture_output=True)
    qs = queries(people, companies, args.queries, args.seed)
    print(f"{len(qs)} queries; indexing the reference ...", flush=True)
    reference = Reference(companies, people)
    server_process = run.start_server(url, run.NO_RESPONSE_CACHE)
    try:
        for text in [q[1] for q in qs[:20]]:
            api_search(text)  # warm the connection pool and caches alike
        api = evaluate("API", api_search, qs)
    finally:
        server_process.terminate()
        server_process.wait()
    ref = evaluate("tantivy", reference.search, qs)
    text = table(api, ref)
    print(text)
    today = datetime.date.today().isoformat()
    run.write_section("relevance", "\n".join([
        f"## Relevance of /search ({today}, {len(people):,} prospects from Faker in {len(LOCALES)} locales)",
        "",
        f"`python3 bench/relevance.py --prospects {args.prospects} --queries {args.queries} --seed {args.seed}` "
        "(queries and relevance: the script's docstring).",
        "",
        text,
    ]))


if __name__ == "__main__":
    main()
