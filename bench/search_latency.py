#!/usr/bin/env python3
"""Latency of ranked search under load: `bench/search_latency.py [--size 1m] [--seconds 15]`.

Against the benchmark database of bench/run.py (`prospect_api_bench_<size>`, seeded when missing), a
release `prospect-api serve` with the response cache off, wrk with 8 connections, one run per kind
of query, side by side:

  prefix1   one letter                         q=m
  prefix2   two letters                        q=ca
  word      a whole last name                  q=carter
  two       first name and a last-name start   q=wei car
  three     first, last, a company word        q=wei carter vandelay
  typo      first name and a mistyped last     q=wei cartre
  email     an exact email                     q=wei.carter12@…

Each kind's requests are drawn from 60 random prospects of the database. Prints req/s, p50 and p99
per kind and writes the `search_latency` section of bench/RESULTS.md with the plans PostgreSQL chose
for one query of each kind (auto_explain of the statements inside search_prospects()).
"""

import argparse
import datetime
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

KINDS = ["prefix1", "prefix2", "word", "two", "three", "typo", "email"]


def typo(word, rng):
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def queries(url, seed):
    rng = random.Random(seed)
    rows = run.psql(url, """SELECT string_agg(concat_ws('|', lower(first_name), lower(last_name), lower(company_name),
                                   lower(email)), E'\\n')
                            FROM (SELECT * FROM prospect_search_view TABLESAMPLE SYSTEM (1) REPEATABLE (7)
                                  WHERE length(last_name) >= 5 AND email IS NOT NULL AND first_name <> ''
                                  LIMIT 60) s""").splitlines()
    people = [row.split("|") for row in rows]
    out = {kind: [] for kind in KINDS}
    for first, last, company, email in people:
        out["prefix1"].append(last[:1])
        out["prefix2"].append(last[:2])
        out["word"].append(last)
        out["two"].append(f"{first} {last[:3]}")
        out["three"].append(f"{first} {last} {company.split()[0]}")
        out["typo"].append(f"{first} {typo(last, rng)}")
        out["email"].append(email)
    return out


def plans(url, samples):
    """What PostgreSQL ran inside search_prospects() for one query of each kind."""
    text = []
    for kind in KINDS:
        q = samples[kind][0]
        sql = (f"LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; "
               f"SET auto_explain.log_buffers = on; SET auto_explain.log_nested_statements = on; "
               f"SET client_min_messages = log; "
               f"SELECT count(*) FROM search_prospects({run.literal(q)}, '{{}}', true, NULL, NULL, NULL, NULL, NULL, 51);")
        out = subprocess.run(["psql", url, "-qAt", "-c", sql], capture_output=True, text=True)
        nested = [block for block in out.stderr.split("LOG:  duration:") if "prospect_search_view" in block
                  and "Query Text: SELECT count(*)" not in block]
        text.append(f"### {kind}: `q={q}`\n\n```\n" + "\n".join(
            "duration:" + block.strip() for block in nested).strip() + "\n```\n")
    return "\n".join(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1m", choices=sorted(run.SIZES))
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    server = os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
    url = run.prepare_database(server, args.size)
    prospects = int(run.psql(url, "SELECT count(*) FROM prospect_search_view"))
    samples = queries(url, args.seed)
    process = run.start_server(url, run.NO_RESPONSE_CACHE)
    results = {}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for kind in KINDS:
                requests = [(f"/search?q={run.quote(q)}", {}) for q in samples[kind]]
                results[kind] = run.run_wrk(requests, args.seconds, workdir)
                r = results[kind]
                print(f"{kind:8} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"
                      f"  errors {r['errors']}", flush=True)
    finally:
        process.terminate()
        process.wait()
    slowest = max(KINDS, key=lambda k: results[k]["p99_ms"])
    lines = [f"## Search latency ({datetime.date.today().isoformat()}, {prospects:,} prospects)", "",
             f"`python3 bench/search_latency.py --size {args.size} --seconds {args.seconds}`: release build, "
             f"response cache off, wrk {run.CLIENTS} connections, {args.seconds} s per kind, 60 queries per kind "
             "from random prospects. Target: p99 ≤ 30 ms.", "",
             "| kind | example | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for kind in KINDS:
        r = results[kind]
        lines.append(f"| {kind} | `{samples[kind][0]}` | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['errors']} |")
    lines += ["", f"Slowest p99: {slowest} ({results[slowest]['p99_ms']:.1f} ms).", "",
              "Plans (auto_explain, one query of each kind, after the runs):", "", plans(url, samples)]
    run.write_section("search_latency", "\n".join(lines))


if __name__ == "__main__":
    main()
