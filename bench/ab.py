#!/usr/bin/env python3
"""Builds or settings side by side, in one run: `bench/ab.py --size 1m --baseline-binary PATH
[--baseline-database NAME] [--rounds 3]`.

Two loads, each through one server per variant, the variants alternating round by round so that
drift on the machine hits them all alike:
  - case (a) of bench/run.py (`/prospects?industry=X`, first page, 12 industries at random) with the
    response cache off: every request runs its statements;
  - the mixed read load of bench/mixed.py (a Zipf mix over lists, pages, searches, companies and a
    cold tail of single prospects) with the response cache on, nothing changing.
Prints req/s per round, the medians and their ratio to the first variant, and writes the `ab` section of
bench/RESULTS.md.

The first variant is this checkout's release build; `--baseline-binary` adds another build (of an
earlier commit, say). A build whose migrations differ reads its own copy of the benchmark database
(`--baseline-database`, made with `CREATE DATABASE … TEMPLATE prospect_api_bench_1m` before migrating),
so that each finds the schema it knows.

Standard library only; needs what bench/run.py needs.
"""

import argparse
import datetime
import os
import random
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mixed  # noqa: E402  (the mix)
import run  # noqa: E402  (data, server, wrk)


def variants(args, url):
    found = [("this build", run.BINARY, url, {}, {})]
    if args.baseline_binary:
        baseline_url = f"{args.server}/{args.baseline_database}" if args.baseline_database else url
        found.append(("baseline", args.baseline_binary, baseline_url, {}, {}))
    return found


def serve(binary, url, env):
    saved = run.BINARY
    run.BINARY = binary
    try:
        return run.start_server(url, env)
    finally:
        run.BINARY = saved


def measure(binary, url, env, requests, seconds, workdir):
    server = serve(binary, url, env)
    try:
        run.run_wrk(requests, 2, workdir)  # warm-up: every backend has planned and cached
        return run.run_wrk(requests, seconds, workdir)
    finally:
        server.terminate()
        server.wait()


def the_mix(url):
    """The mixed load's pre-drawn requests, made against a server of this build."""
    server = serve(run.BINARY, url, {})
    try:
        rng = random.Random(42)
        requests = mixed.distinct_requests(url, rng)
        draws, _, _ = mixed.draw_mix(requests, mixed.cold_ids(url), rng)
        return [(path, {}) for path in draws]
    finally:
        server.terminate()
        server.wait()


def table(results, chosen):
    baseline = {load: statistics.median(f["rps"] for f in results[(chosen[0][0], load)]) for load in LOADS}
    lines = ["| load | variant | req/s per round | median | ÷ first | p99 ms (median run) | errors |",
             "|---|---|---|---|---|---|---|"]
    for load in LOADS:
        for label, *_ in chosen:
            runs = results[(label, load)]
            rates = [f["rps"] for f in runs]
            median_run = sorted(runs, key=lambda f: f["rps"])[len(runs) // 2]
            lines.append(f"| {load} | {label} | {', '.join(f'{r:.0f}' for r in rates)} | "
                         f"{statistics.median(rates):.0f} | {statistics.median(rates) / baseline[load]:.3f} | "
                         f"{median_run['p99_ms']:.2f} | {sum(f['errors'] for f in runs)} |")
    return "\n".join(lines)


LOADS = ("case (a), cache off", "mixed, cache on")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", choices=sorted(run.SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--baseline-binary")
    parser.add_argument("--baseline-database", help="the baseline's copy of the benchmark database")
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    run.subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=run.ROOT)
    url = run.prepare_database(args.server, args.size)
    run.refresh_durations(url)
    chosen = variants(args, url)
    case_a = [(f"/prospects?industry={run.quote(i)}", {}) for i in run.INDUSTRIES]
    mix = the_mix(url)
    loads = {LOADS[0]: (case_a, run.NO_RESPONSE_CACHE), LOADS[1]: (mix, {})}
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for round_number in range(args.rounds):
            for load, (requests, env) in loads.items():
                for label, binary, database, extra_env, _ in chosen:
                    figures = measure(binary, database, {**env, **extra_env}, requests, args.seconds, workdir)
                    results.setdefault((label, load), []).append(figures)
                    print(f"round {round_number + 1}: {load}: {label}: {figures['rps']:.0f} req/s, "
                          f"p99 {figures['p99_ms']:.2f} ms, errors {figures['errors']}", flush=True)
    text = table(results, chosen)
    print(text)
    prospects = int(run.psql(url, 'SELECT count(*) FROM "Prospect"'))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    command = f"bench/ab.py --size {args.size} --rounds {args.rounds} --seconds {args.seconds}"
    if args.baseline_binary:
        command += " --baseline-binary … --baseline-database …"
    run.write_section("ab", f"""## Side by side: this build against a baseline

Written by `{command}` on {now} UTC (same machine as above), {prospects:,} prospects. wrk,
{run.CLIENTS} connections, {args.seconds} s per run after a 2 s warm-up; variants alternating round by
round, each load's rounds one after the other.

{text}
""")


if __name__ == "__main__":
    main()
