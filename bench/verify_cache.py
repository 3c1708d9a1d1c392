#!/usr/bin/env python3
"""Zero stale responses (#24): `bench/verify_cache.py [--size 1m] [--storm 60]` rewrites its section of
bench/RESULTS.md.

Three release servers in incremental mode over the size's database (bench/freshness.py prepares it):

  A  cached, applies the changes (polls the change record every 250 ms);
  B  cached, only reads (it never looks for changes: it learns of A's rounds from the refresh log);
  C  no response cache, only reads: the fresh render every answer is compared with.

The URLs: the mix of bench/mixed.py (lists by industry × country × sort and their next pages, company
lists, searches, companies and their prospects), the facets under each industry and country, the
company lists of every industry, and single prospects, at least 2,000 in all. A and B answer them
before the storm, so that each holds them all; then, for `--storm` seconds, writers make writes of
every kind (prospects moved between companies, renamed, given another department, deleted and
inserted; companies renamed, given another industry, country and revenue) at WRITE_RATE a second,
aimed at the companies and prospects the URLs show, while readers keep asking A and B for the URLs,
so that their entries are carried across round after round. The writers stop; once no read model is
behind the base tables and every instance serves the last round, every URL is asked of A, B and C and
the status and body compared byte for byte. Printed: differences (must be 0), comparisons, rounds,
and how many cached responses the rounds kept, updated and dropped (A's and B's /metrics).

Needs psql and what bench/run.py needs; standard library only.
"""
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import freshness  # noqa: E402
import mixed  # noqa: E402
import run as suite  # noqa: E402

WRITE_RATE = 50
PORTS = {"A": 18091, "B": 18092, "C": suite.PORT}
SINGLE_PROSPECTS = 1000
READERS_PER_INSTANCE = 2


def start(name, url, env):
    """Server `name` on its port, ready."""
    return suite.start_server(url, {"VIEW_MAINTENANCE": "incremental", **env}, port=PORTS[name])


def get(name, path):
    request = urllib.request.Request(f"http://127.0.0.1:{PORTS[name]}{path}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def urls(url, rng):
    """The URLs compared (C must be running: the next pages take their cursors from it)."""
    q = suite.quote
    paths = [path for path, _ in mixed.distinct_requests(url, rng)]
    for industry in suite.INDUSTRIES:
        paths.append(f"/prospects/facets?industry={q(industry)}")
        paths.append(f"/companies?industry={q(industry)}")
        paths.append(f"/companies/facets?industry={q(industry)}")
    for country in suite.COUNTRIES:
        paths.append(f"/prospects/facets?company_country={q(country)}")
        paths.append(f"/prospects?company_country={q(country)}&count=exact")
    paths += ["/prospects/facets", "/companies/facets", "/prospects?count=exact", "/companies?count=exact"]
    shown = prospects_shown(paths)
    ids = suite.psql(url, f"""SELECT string_agg("id", ',') FROM (SELECT "id" FROM "Prospect"
                                ORDER BY md5("id") LIMIT {SINGLE_PROSPECTS}) p""").split(",")
    paths += [f"/prospects/{i}" for i in sorted(set(ids) | set(shown))]
    return paths


def prospects_shown(paths):
    """The prospects the list pages show (their single pages are asked too, and written to)."""
    shown = []
    for path in paths:
        if path.startswith("/prospects?") or (path.startswith("/companies/") and "/prospects" in path):
            status, _, body = get("C", path)
            if status == 200:
                shown += [row["prospect_id"] for row in json.loads(body)["data"]]
    return shown


def targets(url, paths):
    """The companies and prospects the writes aim at: those the URLs show, and their neighbours."""
    prospects = [p.split("/")[2] for p in paths if p.startswith("/prospects/") and "facets" not in p]
    companies = sorted({p.split("/")[2].split("?")[0] for p in paths if p.startswith("/companies/") and "facets" not in p})
    listed = suite.psql(url, """SELECT string_agg(DISTINCT "companyId", ',') FROM "Prospect" WHERE "id" = ANY('{%s}')"""
                        % ",".join(prospects[:3000])).split(",")
    return sorted(set(companies) | set(listed)), prospects


class Writers:
    """WRITE_RATE writes a second of every kind, through one psql session (autocommit: each its own
    transaction, as the writing app's would be)."""

    def __init__(self, url, companies, prospects, rng):
        self.companies, self.prospects, self.rng = companies, prospects, rng
        self.process = subprocess.Popen(["psql", url, "-q", "-v", "ON_ERROR_STOP=0"], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        self.stop = threading.Event()
        self.written = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def statement(self, n):
        rng, lit = self.rng, suite.literal
        company, other = lit(rng.choice(self.companies)), lit(rng.choice(self.companies))
        prospect = lit(rng.choice(self.prospects))
        word = lit(f"Verify{n:05d}")
        return [
            f'UPDATE "Prospect" SET "companyId" = {other} WHERE "id" = {prospect};',
            f'UPDATE "Prospect" SET "lastName" = {word} WHERE "id" = {prospect};',
            f'UPDATE "Company" SET "industry" = {lit(rng.choice(suite.INDUSTRIES))} WHERE "id" = {company};',
            f'DELETE FROM "Prospect" WHERE "id" = {prospect};',
            f"""INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "department", "jobTitleLevel", "email")
                VALUES ('verify_{n}', {company}, 'Vera', {word}, 'Sales', 'VP', 'verify_{n}@x.example');""",
            f'UPDATE "Company" SET "name" = {word}, "revenue" = {n * 1000} WHERE "id" = {company};',
            f"""UPDATE "Prospect" SET "department" = 'Finance', "updatedAt" = "updatedAt" + interval '1 day'
                WHERE "id" = {prospect};""",
            f'UPDATE "Company" SET "country" = {lit(rng.choice(suite.COUNTRIES))} WHERE "id" = {company};',
        ][n % 8]

    def run(self):
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.process.stdin.write(self.statement(self.written) + "\n")
            self.process.stdin.flush()
            self.written += 1
            next_at += 1 / WRITE_RATE
            time.sleep(max(0, next_at - time.monotonic()))

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join()
        self.process.stdin.close()
        self.process.wait()


def read_loop(name, paths, stop, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        get(name, rng.choice(paths))


def cache_metrics(name):
    """kept (by how), dropped (by reason), hits and misses, summed over the views."""
    _, _, body = get(name, "/metrics")
    totals = {}
    for line in body.decode().splitlines():
        for metric in ("response_cache_kept_total", "response_cache_dropped_total", "response_cache_hits_total",
                       "response_cache_misses_total"):
            if line.startswith(metric + "{") or line.startswith(metric + " "):
                label = metric.replace("response_cache_", "").replace("_total", "")
                for part in ("how=\"", "reason=\""):
                    if part in line:
                        label += ":" + line.split(part, 1)[1].split("\"", 1)[0]
                totals[label] = totals.get(label, 0) + int(float(line.split()[-1]))
    return totals


def settled(url):
    """No read model behind the base tables, and A, B and C serve the same generation."""
    for _ in range(600):
        if suite.psql(url, "SELECT count(*) FROM read_models_behind()") == "0":
            break
        time.sleep(0.1)
    time.sleep(1.5)  # FRESHNESS_CACHE_TTL (1 s): B and C read the log afresh


def refreshed_at(headers):
    return {k.lower(): v for k, v in headers.items()}.get("x-data-refreshed-at")


def compare(paths):
    """The differences in status or body, and the answers whose data was of another snapshot than
    C's (then a difference would prove nothing)."""
    differences, other_snapshot = [], 0
    for path in paths:
        expected = get("C", path)
        for name in ("A", "B"):
            got = get(name, path)
            if (got[0], got[2]) != (expected[0], expected[2]):
                differences.append({"instance": name, "path": path, "status": got[0], "expected_status": expected[0]})
            other_snapshot += refreshed_at(got[1]) != refreshed_at(expected[1])
    return differences, other_snapshot


def bench(args):
    url = freshness.prepare(args.server, args.size)
    with tempfile.TemporaryDirectory() as workdir:
        freshness.convert(url, "incremental", workdir)
    freshness.settle_served(url, "incremental")
    psql_clean(url)
    rng = random.Random(7)
    servers = {"C": start("C", url, {"RESPONSE_CACHE_BYTES": "0", "REFRESH_POLL_INTERVAL": "1h",
                                     "FRESHNESS_CACHE_TTL": "0"})}
    try:
        paths = urls(url, rng)
        companies, prospects = targets(url, paths)
        print(f"== {args.size}: {len(paths)} URLs; writes aimed at {len(companies)} companies and "
              f"{len(prospects)} prospects", flush=True)
        servers["A"] = start("A", url, {})
        servers["B"] = start("B", url, {"REFRESH_POLL_INTERVAL": "1h"})
        for name in ("A", "B"):  # every URL cached before the storm
            for path in paths:
                get(name, path)
        before = {name: cache_metrics(name) for name in ("A", "B")}
        since = suite.psql(url, "SELECT clock_timestamp()")
        stop = threading.Event()
        readers = [threading.Thread(target=read_loop, args=(name, paths, stop, n), daemon=True)
                   for n, name in enumerate(["A", "B"] * READERS_PER_INSTANCE)]
        writers = Writers(url, companies, prospects, rng)
        for thread in readers:
            thread.start()
        writers.start()
        time.sleep(args.storm)
        writers.finish()
        stop.set()
        for thread in readers:
            thread.join()
        settled(url)
        rounds = int(suite.psql(url, f"""SELECT count(DISTINCT started_at) FROM materialized_view_log
                                         WHERE trigger = 'incremental' AND status = 'ok' AND started_at > '{since}'"""))
        after = {name: cache_metrics(name) for name in ("A", "B")}
        differences, other_snapshot = compare(paths)
    finally:
        for server in servers.values():
            server.terminate()
            server.wait()
        psql_clean(url)
    delta = {name: {k: v - before[name].get(k, 0) for k, v in after[name].items()} for name in ("A", "B")}
    return {"size": args.size, "urls": len(paths), "comparisons": 2 * len(paths), "differences": len(differences),
            "first_differences": differences[:5], "writes": writers.written, "storm_s": args.storm,
            "rounds": rounds, "answers_of_another_snapshot": other_snapshot, "cache_during_storm": delta,
            "command": " ".join(["bench/verify_cache.py"] + sys.argv[1:]),
            "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"}


def psql_clean(url):
    """The rows a storm inserted (the writes' other changes stay, as any writer's would)."""
    suite.psql(url, """DELETE FROM "Prospect" WHERE "id" LIKE 'verify\\_%'""")


def describe(r):
    row = lambda name: (f"| {name} | {r['cache_during_storm'][name].get('kept:unchanged', 0):,} | "
                        f"{r['cache_during_storm'][name].get('kept:updated', 0):,} | "
                        f"{r['cache_during_storm'][name].get('dropped:changed', 0):,} | "
                        f"{r['cache_during_storm'][name].get('dropped:undecided', 0):,} | "
                        f"{r['cache_during_storm'][name].get('hits', 0):,} | {r['cache_during_storm'][name].get('misses', 0):,} |")
    lines = ["## Zero stale responses after a storm of writes", "",
             f"Written by `{r['command']}` on {r['date']}: {r['writes']:,} writes of every kind in {r['storm_s']} s "
             f"({r['rounds']} rounds) aimed at what the URLs show, while two cached instances (A applies, B only "
             "reads) answered the URLs; then every URL compared, status and body byte for byte, with an "
             "instance without a cache.", "",
             "| URLs | comparisons | differences | answers of another snapshot than the uncached one's |",
             "|---|---|---|---|",
             f"| {r['urls']:,} | {r['comparisons']:,} | **{r['differences']}** | {r['answers_of_another_snapshot']} |", "",
             "What the rounds did to the cached responses during the storm:", "",
             "| instance | kept (unchanged) | kept (totals updated) | dropped (a changed row could show) | "
             "dropped (undecided) | hits | misses |", "|---|---|---|---|---|---|---|", row("A"), row("B"), "",
             *suite.raw_figures(r)]
    return "\n".join(lines) + "\n"


def main():
    result = suite.bench_main(__doc__, "verify", bench, describe, lambda parser: parser.add_argument(
        "--storm", type=int, default=60, help="seconds of writes"))
    if result["differences"]:
        raise SystemExit(f"{result['differences']} stale responses")
    if result["answers_of_another_snapshot"]:
        raise SystemExit(f"{result['answers_of_another_snapshot']} answers compared across snapshots: no proof")


if __name__ == "__main__":
    main()
