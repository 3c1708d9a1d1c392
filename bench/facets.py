#!/usr/bin/env python3
"""Facet counts at scale: `bench/facets.py [--size 1m] [--requests 30]`.

Against the benchmark database bench/run.py seeded, a release server answers `GET /prospects/facets`
(all four facets) with no filter, one filter (an industry) and three filters (industry, company
country, job title level), the values drawn at random per request, from one client one request at a
time: first with the response cache off, so that every request counts (what a new data generation
costs), then with it on (what clients see between refreshes). Prints p50/p99/max latency and writes
the `facets` section of bench/RESULTS.md.

Standard library only.
"""

import argparse
import datetime
import os
import random
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's data, server and request helpers)

LEVELS = ["C-Level", "VP", "Director", "Manager", "Senior", "Entry"]


def cases():
    q = run.quote
    return {
        "no filter": lambda: "/prospects/facets",
        "one filter (industry)": lambda: f"/prospects/facets?industry={q(random.choice(run.INDUSTRIES))}",
        "three filters (industry, company_country, job_title_level)": lambda: (
            f"/prospects/facets?industry={q(random.choice(run.INDUSTRIES))}"
            f"&company_country={q(random.choice(run.COUNTRIES))}&job_title_level={q(random.choice(LEVELS))}"),
    }


def timed(path):
    started = time.perf_counter()
    with urllib.request.urlopen(run.API + path, timeout=60) as response:
        response.read()
        status = response.status
    return (time.perf_counter() - started) * 1000, status


def measure(requests):
    figures = {}
    for name, make in cases().items():
        latencies = []
        for _ in range(requests):
            ms, status = timed(make())
            assert status == 200, status
            latencies.append(ms)
        latencies.sort()
        figures[name] = (statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))], latencies[-1])
        print(f"  {name}: p50 {figures[name][0]:.1f} ms, p99 {figures[name][1]:.1f} ms, max {figures[name][2]:.1f} ms",
              flush=True)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", choices=sorted(run.SIZES))
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    random.seed(42)
    run.subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=run.ROOT)
    url = run.prepare_database(args.server, args.size)
    run.refresh_durations(url)
    results = {}
    for label, env in [("cache off (every request counts)", run.NO_RESPONSE_CACHE),
                       ("cache on (64 MiB)", {})]:
        print(label, flush=True)
        server = run.start_server(url, env)
        try:
            timed("/prospects/facets")  # warm: catalog and buffers, as after any restart
            results[label] = measure(args.requests)
        finally:
            server.terminate()
            server.wait()
    prospects = int(run.psql(url, 'SELECT count(*) FROM "Prospect"'))
    lines = ["| case | " + " | ".join(f"{label}: p50 / p99 / max ms" for label in results) + " |",
             "|---|" + "---|" * len(results)]
    for name in cases():
        cells = [" / ".join(f"{v:.1f}" for v in results[label][name]) for label in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    run.write_section("facets", f"""## Facets: `GET /prospects/facets` (all four facets)

Written by `bench/facets.py --size {args.size} --requests {args.requests}` on {now} UTC, {prospects:,} prospects.
One client, one request at a time, {args.requests} requests per case, values drawn at random per request.

{table}
""")


if __name__ == "__main__":
    main()
