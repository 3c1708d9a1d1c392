#!/usr/bin/env python3
"""What a response-cache miss costs, and what changes it: `bench/miss_cost.py [--size 1m] [--rounds 3]`.

Case (a) of bench/run.py (`/prospects?industry=X`, first page, 12 industries at random) with the
response cache off, so that every request is a miss, through one server per variant, variants
alternating round by round so that drift on the machine hits them all alike. Prints req/s per round, the
median and its ratio to the first variant, and writes the `miss` section of bench/RESULTS.md.

Variants are settings of the same binary (pool size, TLS to PostgreSQL), or another binary given with
`--other-binary` (a build of the same commit with one change, for code changes).

Standard library only; needs wrk and a seeded benchmark database (bench/run.py).
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's data, server and request helpers)


def variants(url, other_binary):
    found = [
        ("as shipped (pool 16, TLS preferred)", run.BINARY, {}),
        ("DATABASE_POOL_SIZE=8", run.BINARY, {"DATABASE_POOL_SIZE": "8"}),
        ("DATABASE_POOL_SIZE=4", run.BINARY, {"DATABASE_POOL_SIZE": "4"}),
        ("sslmode=disable (no TLS to PostgreSQL)", run.BINARY, {"sslmode": "disable"}),
    ]
    if other_binary:
        found.append((f"other binary: {os.path.basename(other_binary)}", other_binary, {}))
    return found


def measure(url, binary, env, seconds, workdir):
    """req/s of case (a) through `binary` with settings `env` (`sslmode` goes into the URL)."""
    env = dict(env)
    if "sslmode" in env:
        url = f"{url}?sslmode={env.pop('sslmode')}"
    saved = run.BINARY
    run.BINARY = binary
    try:
        server = run.start_server(url, {**run.NO_RESPONSE_CACHE, **env})
    finally:
        run.BINARY = saved
    try:
        requests = [(f"/prospects?industry={run.quote(i)}", {}) for i in run.INDUSTRIES]
        run.run_wrk(requests, 2, workdir)  # warm-up: every backend has planned and cached
        return run.run_wrk(requests, seconds, workdir)
    finally:
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", choices=sorted(run.SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--other-binary", help="a second build to compare with the first variant")
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    run.subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=run.ROOT)
    url = run.prepare_database(args.server, args.size)
    run.refresh_durations(url)
    chosen = variants(url, args.other_binary)
    results = {label: [] for label, _, _ in chosen}
    with tempfile.TemporaryDirectory() as workdir:
        for round_number in range(args.rounds):
            for label, binary, env in chosen:
                figures = measure(url, binary, env, args.seconds, workdir)
                results[label].append(figures)
                print(f"round {round_number + 1}: {label}: {figures['rps']:.0f} req/s, "
                      f"p99 {figures['p99_ms']:.1f} ms, errors {figures['errors']}", flush=True)
    baseline = statistics.median(f["rps"] for f in results[chosen[0][0]])
    lines = ["| variant | req/s per round | median | ÷ as shipped | errors |", "|---|---|---|---|---|"]
    for label, runs in results.items():
        rates = [f["rps"] for f in runs]
        median = statistics.median(rates)
        lines.append(f"| {label} | {', '.join(f'{r:.0f}' for r in rates)} | {median:.0f} | "
                     f"{median / baseline:.3f} | {sum(f['errors'] for f in runs)} |")
    table = "\n".join(lines)
    print(table)
    prospects, now = run.measured_on(url)
    command = f"bench/miss_cost.py --size {args.size} --rounds {args.rounds} --seconds {args.seconds}"
    if args.other_binary:
        command += " --other-binary …"
    run.write_section("miss", f"""## What a miss costs: case (a) with the response cache off

Written by `{command}` on {now} UTC (same machine as above), {prospects:,} prospects.
wrk, {run.CLIENTS} connections, {args.seconds} s per run after a 2 s warm-up, variants alternating round by round.

{table}
""")


if __name__ == "__main__":
    main()
