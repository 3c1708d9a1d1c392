#!/usr/bin/env python3
"""Every filter fast: `bench/filter_plans.py [--size 1m] [--limit-ms 50]`.

The first page of every filter of every list endpoint (`/prospects`, `/companies`, and
`/companies/{id}/prospects`, which is `/prospects` with `company_id`), alone and in a few realistic
combinations, with the value held by the fewest rows and with the most common one, under each sort
both ways: the page statements exactly as compiled (.sqlx/), prepared and planned the way the read
pool plans them (`plan_cache_mode = force_custom_plan`), on the benchmark database that bench/run.py
seeds. A filtered page is taken in the shape the API chooses from its estimate (in index order, or
filter first for at most FILTER_FIRST_ROWS matches), and its time includes planning the estimate. `/search` with each of its filters is timed through search_prospects() the same way.

Each case runs twice and keeps the faster; the report gives, per filter and value, the slowest sort
with its time, its plan's shape and the scan's estimated against actual rows (a wrong estimate is
what sends a selective filter down an order index: the ORDER BY + LIMIT trap). Writes the `filters`
section of bench/RESULTS.md and exits non-zero when a case is over the limit.

Standard library only; needs psql.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (RESULTS.md sections, psql)
import sort_plans  # noqa: E402  (the page statements and their plans' shapes)

# Each filter: its API name, a piece of its condition in the page statement (which finds its $n),
# and how its rare and common values are found (see `values`).
FILTERS = {
    "company_prospect_view": [
        ("industry", "THEN industry =", "list", "industry"),
        ("department", "THEN department =", "list", "department"),
        ("job_title_level", "THEN job_title_level =", "list", "job_title_level"),
        ("company_country", "company_country = $", "text", "company_country"),
        ("company_state", "company_state = $", "text", "company_state"),
        ("company_city", "company_city = $", "text", "company_city"),
        ("prospect_country", "prospect_country = $", "text", "prospect_country"),
        ("company_id", "company_id = $", "text", "company_id"),
        ("domain", "domain = $", "text", "domain"),
        ("email", "lower(email) = lower($", "text", "lower(email)"),
        ("job_title", "job_title ILIKE $", "like", "job_title"),
        ("revenue_min", "GREATEST($", "at_least", "revenue"),
        ("revenue_max", "BETWEEN", "at_most", "revenue"),
        ("employees_min", "min_employee_size IS NOT NULL", "at_least", "COALESCE(max_employee_size, 2147483647)"),
        ("employees_max", "min_employee_size <= $", "at_most", "min_employee_size"),
        ("updated_since", "prospect_updated_at >= $", "at_least", "prospect_updated_at"),
    ],
    "company_summary_view": [
        ("industry", "THEN industry =", "list", "industry"),
        ("country", "country = $", "text", "country"),
        ("state", "state = $", "text", "state"),
        ("city", "city = $", "text", "city"),
        ("domain", "domain = $", "text", "domain"),
        ("company_id", "company_id = $", "text", "company_id"),
        ("revenue_min", "GREATEST($", "at_least", "revenue"),
        ("revenue_max", "BETWEEN", "at_most", "revenue"),
        ("employees_min", "min_employee_size IS NOT NULL", "at_least", "COALESCE(max_employee_size, 2147483647)"),
        ("employees_max", "min_employee_size <= $", "at_most", "min_employee_size"),
        ("prospect_count_min", "prospect_count >= $", "at_least", "prospect_count"),
    ],
}

# Realistic combinations, each filter at the value class of the case.
COMBINATIONS = {
    "company_prospect_view": [
        ("industry", "company_country"),
        ("industry", "department", "job_title_level"),
        ("company_country", "revenue_min"),
        ("industry", "employees_min"),
        ("department", "updated_since"),
        ("company_country", "company_city"),
    ],
    "company_summary_view": [
        ("industry", "country"),
        ("country", "prospect_count_min"),
        ("industry", "revenue_min"),
        ("country", "city"),
    ],
}

SEARCH_FILTERS = [("industry", "industry", "list"), ("company_country", "company_country", "text"),
                  ("department", "department", "list")]
SEARCH_TERMS = ["m", "ca", "smith", "olivia sm"]

ENDPOINT = {"company_prospect_view": "/prospects", "company_summary_view": "/companies"}


def values(url, view, expression, kind):
    """{'rare': literal, 'common': literal} for one filter: the value held by the fewest rows and the
    most common one (for a bound, the extreme that keeps the fewest rows and the one that keeps all)."""
    where = "prospect_id IS NOT NULL AND " if view == "company_prospect_view" else ""
    if kind in ("list", "text", "like"):
        def pick(direction):
            value = run.psql(url, f"""SELECT v FROM (SELECT {expression} AS v, count(*) AS n FROM {view}
                                    WHERE {where}{expression} IS NOT NULL GROUP BY 1) s
                                    ORDER BY n {direction}, v LIMIT 1""")
            if kind == "like":
                value = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            text = run.literal(value)
            return f"ARRAY[{text}]" if kind == "list" else text
        return {"rare": pick("ASC"), "common": pick("DESC")}
    low = run.psql(url, f"SELECT min({expression}) FROM {view} WHERE {where}TRUE")
    high = run.psql(url, f"SELECT max({expression}) FROM {view} WHERE {where}TRUE")
    quoted = (lambda v: run.literal(v)) if expression == "prospect_updated_at" else (lambda v: v)
    rare, common = (high, low) if kind == "at_least" else (low, high)
    return {"rare": quoted(rare), "common": quoted(common)}


def parameter(query, needle):
    """The $n of the filter whose condition contains `needle`."""
    for line in query.splitlines():
        found = re.search(r"\(\$(\d+)::[\w\[\]]+ IS NULL OR (.*)", line)
        if found and needle in found.group(2):
            return int(found.group(1))
    raise SystemExit(f"no filter condition containing {needle!r} in:\n{query}")


def psql_script(url, script):
    return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url], input=script,
                          capture_output=True, text=True, check=True).stdout


def explain(url, statement, arguments=None):
    """The plan of one run of `statement`: prepared with a custom plan when it takes `arguments`."""
    if arguments is None:
        script = f"EXPLAIN (ANALYZE, FORMAT JSON) {statement};\n"
    else:
        script = ("SET plan_cache_mode = force_custom_plan;\n"
                  f"PREPARE page AS {statement};\n"
                  f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page({', '.join(arguments)});\n")
    return json.loads(psql_script(url, script))[0]


def best_of_two(url, statement, arguments=None):
    """(milliseconds planning and executing, plan) of the faster of two runs."""
    runs = []
    for _ in range(2):
        plan = explain(url, statement, arguments)
        runs.append((plan["Planning Time"] + plan["Execution Time"], plan))
    return min(runs, key=lambda r: r[0])


def filter_first_rows(name="FILTER_FIRST_ROWS"):
    """The API's FILTER_FIRST_ROWS (at most this many estimated matches, a page reads them first), or
    FILTER_FIRST_BOUNDED_ROWS (the same when the walk is bounded to one value of a filter that leads
    the order's index)."""
    with open(os.path.join(run.ROOT, "src", "views", "read_model.rs")) as f:
        found = re.search(rf"pub const {name}: i64 = ([\d_]+);", f.read())
    return int(found.group(1).replace("_", ""))


# The filters whose column leads the index of an order, by the order's first expression: the
# `order_led_by` of src/views/company_prospects.rs and company_summaries.rs.
ORDER_LED_BY = {
    "company_prospect_view": {"COALESCE(company_name, '')": ["industry"]},
    "company_summary_view": {"COALESCE(name, '')": ["industry", "country"], "prospect_count": ["country"]},
}


def bounded_walk(view, order, chosen):
    """Whether a walk in `order` passes only one value's rows of a filter `chosen` sets (every case
    here gives each filter one value)."""
    led = [names for first, names in ORDER_LED_BY.get(view, {}).items() if order.startswith(first)]
    return any(name in chosen for names in led for name in names)


def estimate(url, statement, arguments):
    """(estimated matches, milliseconds planning) of the API's estimate, the EXPLAIN it runs before
    a filtered page to choose the page's shape."""
    values = list(arguments)
    values[1] = "1"
    script = ("SET plan_cache_mode = force_custom_plan;\n"
              f"PREPARE estimate AS {statement};\n"
              f"EXPLAIN (FORMAT JSON, SUMMARY) EXECUTE estimate({', '.join(values)});\n")
    plan = json.loads(psql_script(url, script))[0]
    top = plan["Plan"]
    matching = top["Plans"][0] if top["Node Type"] == "Limit" else top
    return round(matching["Plan Rows"]), plan["Planning Time"]


def count(url, statement, arguments):
    """How many rows the page statement matches with no limit ($2 NULL)."""
    unlimited = list(arguments)
    unlimited[1] = "NULL"
    script = f"PREPARE c AS SELECT count(*) FROM ({statement}) q;\nEXECUTE c({', '.join(unlimited)});\n"
    return int(psql_script(url, script).strip())


def scan(node):
    """The deepest node on the first-child chain: the scan that feeds the page."""
    while node.get("Plans"):
        node = node["Plans"][0]
    return node


def page_cases(url, view, statements, filter_first, estimate_statement):
    """(label, matching rows, [(order, ms, plan)]) for every filter, value class and combination, each
    page in the shape the API chooses: with filters, after its estimate (whose planning time the
    case's time includes), `filter_first[order]` when at most FILTER_FIRST_ROWS match (at most
    FILTER_FIRST_BOUNDED_ROWS when the walk is bounded: `bounded_walk`)."""
    threshold, bounded_threshold = filter_first_rows(), filter_first_rows("FILTER_FIRST_BOUNDED_ROWS")
    filters = {name: (needle, kind, expression) for name, needle, kind, expression in FILTERS[view]}
    found = {name: values(url, view, expression, kind) for name, (_, kind, expression) in filters.items()}
    cases = [("no filter", {})]
    for name in filters:
        cases += [(f"{name} {klass}", {name: found[name][klass]}) for klass in ("rare", "common")]
    for combination in COMBINATIONS[view]:
        cases += [(" + ".join(combination) + f" {klass}", {n: found[n][klass] for n in combination})
                  for klass in ("rare", "common")]
    out = []
    for label, chosen in cases:
        results, rows = [], None
        for order, statement, params in statements:
            arguments = ["NULL"] * params
            arguments[1] = "51"  # $2: the page size plus one
            for name, value in chosen.items():
                arguments[parameter(statement, filters[name][0]) - 1] = value
            estimating = 0.0
            if chosen:
                matches, estimating = estimate(url, estimate_statement, arguments)
                if matches <= (bounded_threshold if bounded_walk(view, order, chosen) else threshold):
                    statement = filter_first[order]
            ms, plan = best_of_two(url, statement, arguments)
            results.append((order, ms + estimating, plan))
            if rows is None:
                rows = count(url, statement, arguments)
        out.append((label, rows, results))
        order, ms, plan = max(results, key=lambda r: r[1])
        print(f"  {ENDPOINT[view]:10} {label:45} {rows:>9} rows  slowest {ms:7.1f} ms  ORDER BY {order}\n"
              f"      {describe(plan)}", flush=True)
    return out


def search_cases(url):
    """The same for /search: each filter, rare and common, under a few kinds of query."""
    found = {name: values(url, "company_prospect_view", column, kind) for name, column, kind in SEARCH_FILTERS}
    out = []
    for term in SEARCH_TERMS:
        for name, _, _ in SEARCH_FILTERS:
            for klass in ("rare", "common"):
                chosen = {"industry": "NULL", "company_country": "NULL", "department": "NULL", name: found[name][klass]}
                statement = (f"SELECT * FROM search_prospects({run.literal(term)}, '{{}}', true, "
                             f"{chosen['industry']}::text[], {chosen['company_country']}::text, "
                             f"{chosen['department']}::text[], NULL, NULL, 51)")
                ms, plan = best_of_two(url, statement)
                label = f"q={term} {name} {klass}"
                out.append((label, plan["Plan"]["Actual Rows"], [("relevance", ms, plan)]))
                print(f"  /search    {label:45} {plan['Plan']['Actual Rows']:>9} rows  {ms:7.1f} ms", flush=True)
    return out


def describe(plan):
    node = scan(plan["Plan"])
    return (f"{sort_plans.shape(plan['Plan'])}; scan estimated {node.get('Plan Rows')} rows, "
            f"read {node.get('Actual Rows')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m")
    parser.add_argument("--limit-ms", type=float, default=50.0)
    parser.add_argument("--endpoints", default="/prospects,/companies,/search",
                        help="a subset, to look at one (RESULTS.md is written only for all)")
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    url = f"{args.server}/prospect_api_bench_{args.size}"
    # The list endpoints' page statements: those taking every filter of their view (a test's own
    # read model, tests/api/fourth_read_model.rs, reads company_summary_view with fewer).
    statements, filter_first, estimates = {}, {}, {}
    for view, order, statement, params in sort_plans.page_statements():
        statements.setdefault(view, []).append((order, statement, params))
    for view, found in statements.items():
        most = max(params for _, _, params in found)
        statements[view] = [s for s in found if s[2] == most]
    for view, order, statement, params in sort_plans.page_statements(filter_first=True):
        filter_first.setdefault(view, {})[order] = statement
    for statement in sort_plans.compiled_statements():
        explained = re.match(r"EXPLAIN \(FORMAT JSON\) (SELECT .* FROM (\w+)\s.*)", statement, re.S)
        # The one taking every filter (the tests' own read model has an estimate with fewer).
        if explained and explained.group(2) in FILTERS \
                and len(explained.group(1)) > len(estimates.get(explained.group(2), "")):
            estimates[explained.group(2)] = explained.group(1)
    endpoints = args.endpoints.split(",")
    results = []
    for view in FILTERS:
        if ENDPOINT[view] in endpoints:
            cases = page_cases(url, view, statements[view], filter_first[view], estimates[view])
            results += [(ENDPOINT[view], *case) for case in cases]
    if "/search" in endpoints:
        results += [("/search", *case) for case in search_cases(url)]

    lines, over, slowest = [], 0, None
    for endpoint, label, rows, runs in results:
        order, ms, plan = max(runs, key=lambda r: r[1])
        over += sum(r[1] > args.limit_ms for r in runs)
        if slowest is None or ms > slowest[0]:
            slowest = (ms, f"{endpoint} {label}, ORDER BY {order}")
        mark = "ok " if ms <= args.limit_ms else "BAD"
        lines.append(f"{mark} {endpoint:10} {label:45} {rows:>9,} rows  slowest {ms:7.1f} ms "
                     f"(of {len(runs)} orders)\n      ORDER BY {order}: {describe(plan)}")
    total = sum(len(r[3]) for r in results)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    prospects = int(run.psql(url, 'SELECT count(*) FROM "Prospect"'))
    summary = (f"{total - over} of {total} first pages within {args.limit_ms:g} ms; the slowest: "
               f"{slowest[1]}, {slowest[0]:.1f} ms.")
    print(summary)
    if len(endpoints) < 3:
        sys.exit(1 if over else 0)
    body = "\n".join(lines)
    run.write_section("filters", f"""## Every filter fast: first pages under every filter and sort

Written by `bench/filter_plans.py --size {args.size}` on {now} UTC, {prospects:,} prospects, cache off
(statements planned as the read pool plans them, faster of two runs, planning included; a filtered
page in the shape the API chooses from its estimate, whose planning is included too). Each filter
alone with its rarest value (`rare`) and its most common one (`common`; for a bound, the extreme that
keeps every row), and in combinations; each line gives the slowest of the endpoint's sorts both ways.
{summary}

```
{body}
```
""")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
