#!/usr/bin/env python3
"""Reading your own writes (#24): `bench/own_writes.py [--size 1m] [--samples 200]` rewrites its section
of bench/RESULTS.md.

Against a release `prospect-api serve` in incremental mode (default settings: the change record
polled every 250 ms) on the size's database (bench/freshness.py prepares it), single-row inserts into
"Prospect", alternating two ways of reading them back, side by side:

  - with `Prefer: min-freshness=now`: one GET /prospects/{id} sent as soon as the insert committed;
    its time to the answer, which must be a 200 with the row (the request waits for the round);
  - polling: GET /prospects/{id} without the preference every 20 ms until it answers 200 (the
    commit-to-visible of bench/commit_to_visible.py).

Printed: median, p99 and worst of each, and how many preferring requests did not get their row.
Needs psql; standard library only.
"""
import datetime
import math
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import freshness  # noqa: E402
import run as suite  # noqa: E402

PAUSE = 0.3


def get(path, headers=None):
    request = urllib.request.Request(suite.API + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def insert(url, prospect, company):
    suite.psql(url, f"""INSERT INTO "Prospect" ("id", "companyId", "firstName") VALUES ('{prospect}', '{company}', 'Own')""")
    return time.monotonic()


def with_preference(url, prospect, company):
    committed = insert(url, prospect, company)
    status, headers = get(f"/prospects/{prospect}", {"Prefer": "min-freshness=now"})
    applied = {k.lower(): v for k, v in headers.items()}.get("preference-applied") == "min-freshness=now"
    return time.monotonic() - committed, status == 200 and applied


def polling(url, prospect, company):
    committed = insert(url, prospect, company)
    while get(f"/prospects/{prospect}")[0] != 200:
        if time.monotonic() - committed > 60:
            raise SystemExit(f"{prospect} not visible after 60 s")
        time.sleep(0.02)
    return time.monotonic() - committed, True


def summary(samples):
    ordered = sorted(samples)
    return {"n": len(samples), "median_s": round(statistics.median(samples), 3),
            "p99_s": round(ordered[math.ceil(0.99 * len(ordered)) - 1], 3), "worst_s": round(max(samples), 3)}


def bench(args):
    url = freshness.prepare(args.server, args.size)
    with tempfile.TemporaryDirectory() as workdir:
        freshness.convert(url, "incremental", workdir)
    freshness.settle_served(url, "incremental")
    prospects = int(suite.psql(url, 'SELECT count(*) FROM "Prospect"'))
    company = suite.psql(url, 'SELECT "id" FROM "Company" ORDER BY "id" LIMIT 1')
    run = uuid.uuid4().hex[:8]
    times = {"prefer": [], "polling": []}
    missed = 0
    server = suite.start_server(url, {"VIEW_MAINTENANCE": "incremental"})
    try:
        for i in range(args.samples):
            for label, read in (("prefer", with_preference), ("polling", polling)):
                seconds, got = read(url, f"own_{run}_{label}_{i}", company)
                times[label].append(seconds)
                missed += 0 if got else 1
                time.sleep(PAUSE)
    finally:
        server.terminate()
        server.wait()
        suite.psql(url, f"""DELETE FROM "Prospect" WHERE "id" LIKE 'own\\_{run}\\_%'""")
    return {"size": args.size, "prospects": prospects, "prefer": summary(times["prefer"]),
            "polling": summary(times["polling"]), "prefer_without_the_row": missed,
            "command": " ".join(["bench/own_writes.py"] + sys.argv[1:]),
            "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"}


def describe(r):
    row = lambda label, m: f"| {label} | {m['n']} | {m['median_s']:.3f} | {m['p99_s']:.3f} | {m['worst_s']:.3f} |"
    lines = ["## Reading your own writes (incremental mode)", "",
             f"Written by `{r['command']}` on {r['date']}, {r['prospects']:,} prospects, release build, default "
             "settings (the change record polled every 250 ms). Single-row inserts, alternating the two ways of "
             "reading them back; seconds from the insert's commit to the answer holding the row:", "",
             "| read | samples | median s | p99 s | worst s |", "|---|---|---|---|---|",
             row("one GET with `Prefer: min-freshness=now`", r["prefer"]),
             row("GET without it, polled every 20 ms until 200", r["polling"]), "",
             f"Requests with the preference answered without their row: {r['prefer_without_the_row']}.", "",
             *suite.raw_figures(r)]
    return "\n".join(lines) + "\n"


def main():
    result = suite.bench_main(__doc__, "own_writes", bench, describe, lambda parser: parser.add_argument(
        "--samples", type=int, default=200, help="inserts per way of reading"))
    if result["prefer_without_the_row"]:
        raise SystemExit(f"{result['prefer_without_the_row']} requests with the preference missed their row")


if __name__ == "__main__":
    main()
