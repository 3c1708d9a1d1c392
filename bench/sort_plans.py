#!/usr/bin/env python3
"""Every sort, both ways, is an index scan that stops at the limit: `bench/sort_plans.py [--size 1m]`.

Takes the API's page statements exactly as compiled (the query texts sqlx recorded in .sqlx/), plans
each first page the way the read pool does (prepared, `plan_cache_mode = force_custom_plan`), without
filters and with one industry, on the benchmark database that bench/run.py seeded, and prints the plan's
shape, its planning and execution times. Exits non-zero if any plan sorts or scans the whole view.

Standard library only; needs psql.
"""

import argparse
import datetime
import glob
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (RESULTS.md sections)

ROOT = run.ROOT


def compiled_statements():
    """The text of every statement the API compiled, from .sqlx/."""
    for path in sorted(glob.glob(os.path.join(ROOT, ".sqlx", "query-*.json"))):
        with open(path) as f:
            yield json.load(f)["query"]


def page_statements(filter_first=False):
    """(view, order by, text, parameter count) of each page statement in index order (or, with
    `filter_first`, in the shape that reads the matches first: src/views/order.rs, `page_shape!`)."""
    found = []
    for query in compiled_statements():
        view = re.search(r"FROM (company_prospect_view|company_summary_view)\b", query)
        order = re.search(r"ORDER BY (.*?) LIMIT \$2", query, re.S)
        shape_matches = query.lstrip().startswith("WITH matches AS MATERIALIZED") == filter_first
        # Facet counts are not pages; an estimate is a page statement under EXPLAIN.
        if view and order and shape_matches and "GROUP BY" not in query \
                and not query.lstrip().startswith("EXPLAIN"):
            params = max(int(n) for n in re.findall(r"\$(\d+)", query))
            found.append((view.group(1), " ".join(order.group(1).split()), query, params))
    return found


def explain(url, query, params, industry):
    values = ["NULL"] * params
    values[1] = "51"  # $2: the page size plus one
    if industry:
        values[2] = "ARRAY['Software']"  # $3: the first filter of both resources, industry
    script = (
        "SET plan_cache_mode = force_custom_plan;\n"
        f"PREPARE page AS {query};\n"
        f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page({', '.join(values)});\n"
    )
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", url], input=script, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)[0]


def shape(node):
    """The chain of node types down the first child, e.g. 'Limit > Index Scan Backward'."""
    names = []
    while node:
        name = node["Node Type"]
        if node.get("Scan Direction") == "Backward":
            name += " Backward"
        if "Index Name" in node:
            name += f" ({node['Index Name']})"
        names.append(name)
        node = (node.get("Plans") or [None])[0]
    return " > ".join(names)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m")
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    url = f"{args.server}/prospect_api_bench_{args.size}"
    failures = 0
    report = []
    for view, order, query, params in page_statements():
        for industry in (False, True):
            plan = explain(url, query, params, industry)
            top = plan["Plan"]
            text = shape(top)
            rows_read = top["Plans"][0]["Actual Rows"] if top.get("Plans") else None
            ok = top["Node Type"] == "Limit" and "Sort" not in text and "Seq Scan" not in text
            failures += not ok
            line = (f"{'ok ' if ok else 'BAD'} {view:22} {'industry' if industry else 'no filter':9} "
                    f"ORDER BY {order}\n      {text}; rows read {rows_read}; "
                    f"planning {plan['Planning Time']:.3f} ms, execution {plan['Execution Time']:.3f} ms")
            print(line)
            report.append(line)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    prospects = int(run.psql(url, 'SELECT count(*) FROM "Prospect"'))
    body = "\n".join(report)
    run.write_section("sort_plans", f"""## Every sort both ways: plans of the first page

Written by `bench/sort_plans.py --size {args.size}` on {now} UTC, {prospects:,} prospects: each page
statement as compiled (.sqlx/), prepared with a custom plan, without filters and with one industry.
{len(report) - failures} of {len(report)} are an index scan stopping at the limit.

```
{body}
```
""")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
