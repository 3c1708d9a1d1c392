#!/usr/bin/env python3
"""Incremental mode at scale (#25): `bench/incremental_scale.py --size 1m|10m` rewrites its section of
bench/RESULTS.md (one section per size, `scale_1m`, `scale_10m`).

Against a release `prospect-api serve` in incremental mode, on a database whose base tables were
loaded while its read models were empty (`migrate` with VIEW_MAINTENANCE=incremental on an empty
database, then `seed --no-refresh`: every company changed since the tables' last round):

  1. bootstrap: the server builds the three tables beside the empty ones at startup and swaps them
     in. Measured: the build's time (first progress report to the swap), what /admin/views reported
     meanwhile, the swap round's duration (the longest readers can have waited for it), and a reader
     looping on /prospects and /companies throughout (statuses, slowest answer); a prospect inserted
     during the build must be served after the swap. `--reload` makes the database so again: empty
     tables, synced at a snapshot, and a change record row per prospect;
  2. repair: commit to visible of single-row inserts (median, p99, worst) with no repair running,
     then while a repair walks the companies (POST /admin/refresh), side by side with the ratio of the
     p99s; the repair's total time, ranges and rows; writes made behind the triggers' back before it
     must be served after it.

The database is prepared once per size (`prospect_api_scale_<size>`), by the steps above. Needs psql;
standard library only (plus bench/run.py's helpers).
"""
import argparse
import datetime
import json
import math
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import freshness  # noqa: E402  (settle: nothing running, then a checkpoint)
import run as suite  # noqa: E402  (the shared helpers: binary, psql, server address)

ADMIN_TOKEN = "bench-admin-token-0123456789abcdef-01"
# Companies per size, as #25 measured them (about 9.7 prospects each).
COMPANIES = {"100k": 10_000, "1m": 100_000, "10m": 1_000_000}
VIEWS = ["company_prospect_view", "company_summary_view", "prospect_search_view"]


def empty_read_models(url, trigger):
    """The read models as `migrate` leaves them on an empty database: empty tables, each logged as
    synced at the current snapshot (by `trigger`), and no change recorded."""
    for view in VIEWS:
        suite.psql(url, f"TRUNCATE {view}")
    suite.psql(url, "DELETE FROM base_table_changes")
    suite.psql(url, "INSERT INTO materialized_view_log (view_name, trigger, status, method, started_at, "
                    f"finished_at, row_count, snapshot) SELECT name, {suite.literal(trigger)}, 'ok', 'build', "
                    "now(), now(), 0, pg_current_snapshot() FROM read_model_catalog")


def prepare(server, size):
    """The size's database with its base tables loaded while the read models were empty tables."""
    url = f"{server}/prospect_api_scale_{size}"
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn", VIEW_MAINTENANCE="incremental")
    subprocess.run([suite.BINARY, "migrate"], check=True, env=env, capture_output=True)
    companies = int(suite.psql(url, 'SELECT count(*) FROM "Company"'))
    if companies != COMPANIES[size]:
        print(f"  seeding {size} (read models empty) ...", flush=True)
        # Empty read models with a logged snapshot: what `migrate` on an empty database leaves.
        suite.psql(url, 'TRUNCATE "Prospect", "Company"')
        empty_read_models(url, "cli")
        out = suite.sh(suite.BINARY, "seed", "--companies", str(COMPANIES[size]), "--no-refresh", env=env)
        print("  " + out.strip(), flush=True)
    for table in ('"Company"', '"Prospect"'):
        suite.psql(url, f"VACUUM ANALYZE {table}")
    return url


def empty_tables(url):
    """Whether the read models are empty while the base tables are not (a bootstrap is due)."""
    return suite.psql(url, "SELECT NOT EXISTS (SELECT 1 FROM company_summary_view)") == "t"


def admin(method, path):
    request = urllib.request.Request(suite.API + path, method=method,
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def fetch(path):
    """The status and body of a GET."""
    try:
        with urllib.request.urlopen(suite.API + path, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def status(path):
    return fetch(path)[0]


class Reader(threading.Thread):
    """Reads pages in a loop until stopped: every status and latency, with when it was sent."""

    PATHS = ["/prospects?industry=Software&limit=20", "/companies?limit=20"]

    def __init__(self):
        super().__init__(daemon=True)
        self.stopping = threading.Event()
        self.seen = []  # (sent at, seconds, status)
        self.first_rows = None  # when the first answer holding rows was sent

    def run(self):
        i = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            code, body = fetch(self.PATHS[i % 2])
            self.seen.append((started, time.monotonic() - started, code))
            if self.first_rows is None and code == 200 and b'"data":[]' not in body:
                self.first_rows = started
            i += 1

    def around_swap(self, seconds=2.0):
        """The slowest read sent in the `seconds` before the first answer with rows (the swap's
        commit lies in that window) and the one after it."""
        if self.first_rows is None:
            return float("nan")
        return max((s for at, s, _ in self.seen if self.first_rows - seconds <= at <= self.first_rows + 0.5),
                   default=float("nan"))

    def stop(self):
        self.stopping.set()
        self.join()


def start(url, extra=None):
    env = {"VIEW_MAINTENANCE": "incremental", "ADMIN_TOKEN": ADMIN_TOKEN, "RESPONSE_CACHE_BYTES": "0"}
    env.update(extra or {})
    return suite.start_server(url, env)


def bootstrap(url):
    """The server's build beside at startup, with a reader throughout and a write in the middle."""
    server = start(url)
    reader = Reader()
    reader.start()
    began = None
    phases = []
    last_phase = {}
    inserted = None
    try:
        while True:
            views = admin("GET", "/admin/views")
            work = [v["work"] for v in views if v.get("work")]
            now = time.monotonic()
            if work and began is None:
                began = now
            for view in views:
                w = view.get("work")
                if not w:
                    continue
                # One line per phase and view: index builds report several indexes in turn.
                label = f'{view["view"]}: {w["phase"]}'
                if last_phase.get(view["view"]) != label:
                    last_phase[view["view"]] = label
                    phases.append((round(now - (began or now), 1), label))
            if began and inserted is None and now - began > 2:
                company = suite.psql(url, 'SELECT "id" FROM "Company" ORDER BY "id" DESC LIMIT 1')
                inserted = "scale_during_build"
                suite.psql(url, f"""DELETE FROM "Prospect" WHERE "id" = '{inserted}'; INSERT INTO "Prospect" ("id", "companyId", "firstName") VALUES ('{inserted}', '{company}', 'During')""")
            built = suite.psql(url, "SELECT count(*) FROM last_successful_refreshes() s JOIN materialized_view_log l "
                                    "ON l.id = s.log_id WHERE l.method = 'build' AND l.trigger = 'incremental'")
            if built == "3":
                break
            time.sleep(1)
        took = time.monotonic() - (began or time.monotonic())
        visible = inserted is None or status(f"/prospects/{inserted}") == 200
        time.sleep(1)
    finally:
        reader.stop()
        server.terminate()
        server.wait()
    swap_ms = json.loads(suite.psql(url, "SELECT json_object_agg(view_name, duration_ms) FROM materialized_view_log "
                                         "WHERE method = 'build' AND trigger = 'incremental'"))
    rows = json.loads(suite.psql(url, "SELECT json_object_agg(view_name, row_count) FROM last_successful_refreshes()"))
    statuses = {}
    for _, _, code in reader.seen:
        statuses[code] = statuses.get(code, 0) + 1
    slowest = max((s for _, s, _ in reader.seen), default=0)
    ordinary = sorted(s for _, s, _ in reader.seen)
    return {"build_s": took, "phases": phases, "catch_up_ms": swap_ms, "rows": rows, "statuses": statuses,
            "slowest_read_ms": slowest * 1000, "read_p99_ms": ordinary[int(0.99 * (len(ordinary) - 1))] * 1000,
            "slowest_read_at_swap_ms": reader.around_swap() * 1000, "reads": len(reader.seen),
            "write_during_build_visible": visible}


def commit_to_visible(url, company, samples, pause, until=None):
    """Seconds from each insert's commit to the API serving it: `samples` of them, or as many as fit
    until `until()` turns true. The pause between samples is drawn uniformly from 0 to twice `pause`:
    with a fixed one, the loop (insert, wait until served, pause) fell into step with the change
    poll (REFRESH_POLL_INTERVAL, 250 ms), every insert arriving just before a poll, so that a quiet
    run never saw the wait for the next poll that a writer arriving at any time sees."""
    arrivals = random.Random(samples)
    seconds = []
    i = 0
    while (until is None and i < samples) or (until is not None and not until()):
        prospect = f"scale_c2v_{os.getpid()}_{time.time_ns()}"
        suite.psql(url, f"""INSERT INTO "Prospect" ("id", "companyId", "firstName") VALUES ('{prospect}', '{company}', 'Bench')""")
        committed = time.monotonic()
        while status(f"/prospects/{prospect}") != 200:
            if time.monotonic() - committed > 600:
                raise SystemExit(f"{prospect} not visible after 600 s")
            time.sleep(0.01)
        seconds.append(time.monotonic() - committed)
        i += 1
        time.sleep(arrivals.uniform(0, 2 * pause))
    return seconds


def summary(seconds):
    """Median, p99 (nearest rank) and worst."""
    ordered = sorted(seconds)
    p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
    return {"n": len(ordered), "median": statistics.median(ordered), "p99": p99, "worst": ordered[-1]}


def repair(url, samples, pause):
    """Commit to visible without and with a repair running; the repair's cost; hidden writes fixed.
    First the tables a build left behind are vacuumed (as autovacuum would, in its own time) and
    everything settles, so that "no repair running" is quiet, not a vacuum of 10M rows."""
    for table in VIEWS + ["base_table_changes"]:
        suite.psql(url, f"VACUUM ANALYZE {table}")
    server = start(url)
    try:
        freshness.settle(url)  # the server applies what is pending first
        company = suite.psql(url, 'SELECT "id" FROM "Company" ORDER BY "id" LIMIT 1 OFFSET 100')
        quiet = commit_to_visible(url, company, samples, pause)
        # Writes the triggers do not see: only the repair can bring them in.
        hidden = suite.psql(url, """SELECT "id" FROM "Prospect" ORDER BY "id" DESC LIMIT 1""")
        # A name of this run's own: one an earlier run left would already be in the view.
        hidden_name = f"Hidden By Bench {time.time_ns()}"
        suite.psql(url, f"""SET session_replication_role = replica; UPDATE "Prospect" SET "lastName" = '{hidden_name}' WHERE "id" = '{hidden}'""")
        started = time.monotonic()
        admin("POST", "/admin/refresh?wait=false")

        def running():
            views = admin("GET", "/admin/views")
            return any((v.get("work") or {}).get("kind") == "repair" for v in views)

        for _ in range(100):
            if running():
                break
            time.sleep(0.05)
        during = commit_to_visible(url, company, 0, pause, until=lambda: not running())
        took = time.monotonic() - started
        fixed = suite.psql(url, f"SELECT last_name FROM company_prospect_view WHERE prospect_id = '{hidden}'")
        logged = suite.psql(url, "SELECT json_agg(json_build_object('view', view_name, 'rows_changed', rows_changed, "
                                 "'duration_ms', duration_ms)) FROM (SELECT DISTINCT ON (view_name) * FROM materialized_view_log "
                                 "WHERE method = 'repair' ORDER BY view_name, id DESC) l")
        applies = suite.psql(url, f"SELECT count(*) FROM materialized_view_log WHERE view_name = 'company_summary_view' "
                                  f"AND method IN ('apply', 'repair') AND finished_at > now() - interval '{int(took) + 1} seconds'")
    finally:
        server.terminate()
        server.wait()
    suite.psql(url, """DELETE FROM "Prospect" WHERE "id" LIKE 'scale\\_%'""")
    return {"quiet": summary(quiet), "during": summary(during), "repair_s": took, "hidden_fixed": fixed == hidden_name,
            "repair_log": json.loads(logged or "[]"), "rounds_during_repair": int(applies)}


def write(size, url, result, args):
    prospects = int(suite.psql(url, 'SELECT count(*) FROM "Prospect"'))
    companies = int(suite.psql(url, 'SELECT count(*) FROM "Company"'))
    lines = [f"## Incremental mode at {size}: bootstrap and repair ({prospects:,} prospects, {companies:,} companies)", "",
             f"Written by `python3 bench/incremental_scale.py --size {size}{' --reload' if args.reload else ''} "
             f"--samples {args.samples}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
             f"release build, 2 cores shared by the API, PostgreSQL 15 and the script.", ""]
    boot = result.get("bootstrap")
    if not boot:
        lines += kept_bootstrap(size)
    if boot:
        lines += ["**Bootstrap** (the server, started on base tables loaded while the read models were empty, "
                  "builds all three beside them from one snapshot and swaps them in):", "",
                  "| build, first progress report to swap | swap round up to the log (catch-up) | reads during it | "
                  "their statuses | read p99 / slowest | slowest read around the swap | write made during the build served after it |",
                  "|---|---|---|---|---|---|---|",
                  f"| {boot['build_s']:.0f} s | {max(boot['catch_up_ms'].values())} ms | {boot['reads']:,} | "
                  + ", ".join(f"{c}: {n:,}" for c, n in sorted(boot['statuses'].items()))
                  + f" | {boot['read_p99_ms']:.0f} / {boot['slowest_read_ms']:.0f} ms | {boot['slowest_read_at_swap_ms']:.0f} ms | "
                  + f"{'yes' if boot['write_during_build_visible'] else 'NO'} |", "",
                  "(Around the swap: reads sent in the 2 s before the first answer holding rows, and 0.5 s after: "
                  "the swap's commit lies in that window.)", "",
                  "Rows built: " + ", ".join(f"{v} {n:,}" for v, n in sorted(boot["rows"].items())) + ".", "",
                  "Phases reported by `/admin/views` (seconds since the first report):", "", "```"]
        lines += [f"{at:>7} s  {label}" for at, label in boot["phases"]] + ["```", ""]
    rep = result["repair"]
    q, d = rep["quiet"], rep["during"]
    lines += ["**Repair** (`POST /admin/refresh`: every table compared with its definition a range of companies at a "
              "time, beside the applies, a round only for the companies of a range that differ; single-row inserts "
              f"at random times, 0 to {2 * args.pause:g} s apart, each polled through `GET /prospects/{{id}}` until served):", "",
              "| commit to visible | samples | median s | p99 s | worst s |", "|---|---|---|---|---|",
              f"| no repair running | {q['n']} | {q['median']:.3f} | {q['p99']:.3f} | {q['worst']:.3f} |",
              f"| while the repair runs | {d['n']} | {d['median']:.3f} | {d['p99']:.3f} | {d['worst']:.3f} |",
              f"| ratio (during ÷ quiet) | | {d['median'] / q['median']:.2f} | {d['p99'] / q['p99']:.2f} | |", "",
              f"The repair took {rep['repair_s']:.0f} s ({rep['rounds_during_repair']} rounds logged meanwhile); "
              f"a write made behind the triggers' back before it was served after it: "
              f"{'yes' if rep['hidden_fixed'] else 'NO'}. Its log rows: "
              + ", ".join(f"{r['view']} {r['rows_changed']} rows changed" for r in rep["repair_log"]) + "."]
    suite.write_section(f"scale_{size}", "\n".join(lines) + "\n")


def kept_bootstrap(size):
    """The bootstrap part of the size's section as the last run with `--reload` wrote it (a run
    without measures only the repair)."""
    current = open(suite.RESULTS).read() if os.path.exists(suite.RESULTS) else ""
    begin = current.find(f"<!-- scale_{size}:begin -->")
    start, end = current.find("**Bootstrap**", begin), current.find("**Repair**", begin)
    if begin < 0 or start < 0 or end < start:
        return []
    written = current.find("Written by", begin)
    return [f"(The bootstrap below is from an earlier run: {current[written:current.find(';', written)]}.)", "",
            current[start:end].rstrip(), ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", choices=["100k", "1m", "10m"])
    parser.add_argument("--samples", type=int, default=60, help="commit-to-visible samples without a repair")
    parser.add_argument("--pause", type=float, default=0.3, help="mean seconds between samples (drawn from 0 to twice it)")
    parser.add_argument("--reload", action="store_true",
                        help="empty the read models first, so that the bootstrap is measured again")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
    url = prepare(server, args.size)
    if args.reload:
        # As `migrate` leaves an empty database (empty tables, synced at a snapshot), then the change
        # record as loading the base tables through their triggers leaves it: a row per prospect.
        empty_read_models(url, "migrate")
        suite.psql(url, 'INSERT INTO base_table_changes (table_name, company_ids) '
                        'SELECT \'Prospect\', ARRAY["companyId"] FROM "Prospect"')
        suite.psql(url, "VACUUM ANALYZE base_table_changes")
    result = {}
    if empty_tables(url):
        print("bootstrap ...", flush=True)
        result["bootstrap"] = bootstrap(url)
        print(json.dumps(result["bootstrap"], indent=1), flush=True)
    print("repair ...", flush=True)
    result["repair"] = repair(url, args.samples, args.pause)
    print(json.dumps(result["repair"], indent=1), flush=True)
    write(args.size, url, result, args)


if __name__ == "__main__":
    main()
