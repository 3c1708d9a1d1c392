#!/usr/bin/env python3
"""Commit-to-visible latency: how long after a single-row INSERT into "Prospect" commits does the row
appear through the API, with no manual refresh (poll or notification -> debounce -> refresh, or
-> incremental apply -> read)?

Usage: bench/commit_to_visible.py --api http://127.0.0.1:8080 --database-url postgres://... [--samples 20]

Needs `psql` and a running `prospect-api serve` on that database. Prints each sample and the median,
p99 (nearest rank: with fewer than 100 samples, the worst) and worst. Standard library only.
"""
import argparse
import json
import math
import statistics
import subprocess
import time
import urllib.error
import urllib.request
import uuid


def psql(database_url, sql):
    return subprocess.run(
        ["psql", database_url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one sample after this many seconds")
    parser.add_argument("--pause", type=float, default=1.0,
                        help="seconds between samples (lets the refresh that served one finish before the next write)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()

    company = psql(args.database_url, 'SELECT "id" FROM "Company" ORDER BY "id" LIMIT 1')
    run = uuid.uuid4().hex[:8]
    samples = []
    for i in range(args.samples):
        prospect = f"bench_{run}_{i}"
        psql(args.database_url,
             f"INSERT INTO \"Prospect\" (\"id\", \"companyId\", \"firstName\") VALUES ('{prospect}', '{company}', 'Bench')")
        committed = time.monotonic()
        while status(f"{args.api}/prospects/{prospect}") != 200:
            if time.monotonic() - committed > args.timeout:
                raise SystemExit(f"{prospect} not visible after {args.timeout} s")
            time.sleep(0.02)
        seconds = time.monotonic() - committed
        samples.append(seconds)
        print(f"sample {i + 1:2}: {seconds:6.2f} s", flush=True)
        time.sleep(args.pause)
    psql(args.database_url, f"DELETE FROM \"Prospect\" WHERE \"id\" LIKE 'bench\\_{run}\\_%'")
    ordered = sorted(samples)
    p99 = ordered[math.ceil(0.99 * len(ordered)) - 1]
    summary = {"samples": len(samples), "median_s": round(statistics.median(samples), 3), "p99_s": round(p99, 3),
               "worst_s": round(max(samples), 3)}
    print(json.dumps(summary) if args.json else
          f"median {summary['median_s']} s, p99 {summary['p99_s']} s, worst {summary['worst_s']} s over {len(samples)} inserts")


if __name__ == "__main__":
    main()
