#!/usr/bin/env python3
"""Freshness benchmarks of the two maintenance modes, side by side in one run:
`bench/freshness.py [--sizes 100k,1m] [--modes refresh,incremental]` rewrites its section of
bench/RESULTS.md (bench/run.py owns the other).

For each data size (seeded once, as bench/run.py does; `10m` is optional, about 20 GB) and each mode:

  - the conversion into the mode while a server serves reads: build time, how long readers waited for
    the swap (as `migrate` reports it), and the slowest read and any error seen meanwhile;
  - commit to visible: single-row inserts, each timed until the API serves it (median, p99, worst);
  - API throughput and latency of case (a) `/prospects?industry=X` (wrk) idle, then while writers
    change WRITER_RATE companies a second (pgbench -R: half update a prospect, half a company), and
    the ratio; in incremental mode also the applies made meanwhile (count, companies, p50/p99 time);
  - incremental mode: what a round costs per changed company against a full rebuild (where a rebuild
    becomes cheaper: INCREMENTAL_REBUILD_SHARE);
  - once per size: the writers' cost of the change-capture triggers (8 pgbench clients, paired rounds
    from a checkpoint, as bench/run.py measures it).

Needs what bench/run.py needs (psql, pgbench, wrk). Standard library only.
"""
import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as suite  # noqa: E402  (the shared helpers: data, server, wrk, pgbench)

WRITER_RATE = 50  # companies changed per second while reads are measured
SAMPLES = {"refresh": 20, "incremental": 100}
PAUSE = {"refresh": 1.0, "incremental": 0.3}


def prepare(server, size):
    """The size's database, seeded once; the read models stay in whatever mode they are."""
    url = f"{server}/prospect_api_bench_{size}"
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn")
    subprocess.run([suite.BINARY, "migrate"], check=True, env=dict(env, VIEW_MAINTENANCE=current_mode(url, env)),
                   capture_output=True)
    companies = int(suite.psql(url, 'SELECT count(*) FROM "Company"'))
    if companies != suite.SIZES[size]:
        print(f"  seeding {size} ...", flush=True)
        print("  " + suite.sh(suite.BINARY, "seed", "--companies", str(suite.SIZES[size]), "--replace", "--no-refresh", env=env).strip(),
              flush=True)
    if suite.psql(url, "SELECT bool_and(populated) FROM read_models") != "t":
        # A server would populate them at startup, but not within start_server's wait at 10m.
        print("  populating the read models ...", flush=True)
        suite.sh(suite.BINARY, "refresh", env=dict(env, VIEW_MAINTENANCE=current_mode(url, env)))
    suite.psql(url, """DELETE FROM "Prospect" WHERE "id" LIKE 'w\\_%' OR "id" LIKE 'bench\\_%'""")
    for table in ('"Company"', '"Prospect"'):
        suite.psql(url, f"VACUUM ANALYZE {table}")
    return url


def current_mode(url, env):
    """The mode the database is in (a new database: refresh)."""
    try:
        return suite.psql(url, "SELECT COALESCE(min(mode), 'refresh') FROM read_models") or "refresh"
    except subprocess.CalledProcessError:
        subprocess.run([suite.BINARY, "migrate"], check=True, env=env, capture_output=True)
        return "refresh"


class Reader(threading.Thread):
    """Reads one page in a loop until stopped, keeping every latency and every non-200."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopping = threading.Event()
        self.latencies = []
        self.errors = []

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(suite.API + "/prospects?industry=Software&limit=20", timeout=30) as r:
                    r.read()
            except urllib.error.HTTPError as error:
                self.errors.append(error.code)
            except OSError as error:
                self.errors.append(str(error))
            self.latencies.append(time.monotonic() - started)

    def stop(self):
        self.stopping.set()
        self.join()


def convert(url, mode, workdir):
    """Converts the read models to `mode` with `migrate` while a server serves reads."""
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn", VIEW_MAINTENANCE=mode)
    before = current_mode(url, env)
    if before == mode:
        return None
    server = suite.start_server(url, {"VIEW_MAINTENANCE": before})
    reader = Reader()
    reader.start()
    try:
        started = time.monotonic()
        out = suite.sh(suite.BINARY, "migrate", env=env)
        took = time.monotonic() - started
    finally:
        reader.stop()
        server.terminate()
        server.wait()
    lines = [line for line in out.splitlines()[1:] if line.strip()]
    print("  " + "\n  ".join(lines), flush=True)
    return {"from": before, "to": mode, "seconds": round(took, 1), "lines": lines,
            "reads": len(reader.latencies), "read_errors": len(reader.errors),
            "slowest_read_ms": round(max(reader.latencies) * 1000, 1) if reader.latencies else None}


def log_rounds(url, since):
    """The incremental rounds logged since `since` (a database timestamp)."""
    rows = suite.psql(url, f"""SELECT COALESCE(json_agg(r), '[]') FROM (
        SELECT started_at, max(duration_ms) AS ms, max(companies_changed) AS companies
        FROM materialized_view_log WHERE trigger = 'incremental' AND status = 'ok' AND started_at >= '{since}'
        GROUP BY started_at) r""")
    return json.loads(rows)


def percentile(values, share):
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[math.ceil(share * len(ordered)) - 1] if ordered else None


def settle(url):
    """Waits until no read model is behind the base tables, no refresh or round runs and no autovacuum
    worker is busy, then checkpoints, so that "idle" means idle (the commit-to-visible inserts leave
    refreshes behind them; a conversion leaves gigabytes of dirty pages that a checkpoint would
    otherwise write during the measurement)."""
    for _ in range(1200):
        busy = suite.psql(url, """SELECT EXISTS (SELECT 1 FROM read_models_behind())
            OR EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (backend_type = 'autovacuum worker'
                       OR (datname = current_database() AND state = 'active'
                           AND (query LIKE '%refresh_view_logged%' OR query LIKE '%maintain_incremental%'))))""")
        if busy == "f":
            suite.psql(url, "CHECKPOINT")
            time.sleep(1)
            return
        time.sleep(0.5)
    raise SystemExit("the read models did not settle")


def settle_served(url, mode):
    """`settle` with a server in `mode` running, which applies what a script's writes left pending
    (without one nothing would, in incremental mode, and `settle` would wait in vain)."""
    server = suite.start_server(url, {"VIEW_MAINTENANCE": mode})
    try:
        settle(url)
    finally:
        server.terminate()
        server.wait()


def start_writers(url, companies, seconds, workdir):
    """pgbench changing WRITER_RATE random companies a second for `seconds`: half of them a prospect's
    update time, half the company's revenue (every row of the company changes)."""
    scripts = []
    for i, sql in enumerate([
        f"""\\set c random(1, {companies})
UPDATE "Prospect" SET "updatedAt" = now() AT TIME ZONE 'UTC'
WHERE "id" = (SELECT "id" FROM "Prospect" WHERE "companyId" = 'cmp_' || lpad(:c::text, 8, '0') LIMIT 1);""",
        f"""\\set c random(1, {companies})
UPDATE "Company" SET "revenue" = COALESCE("revenue", 0) + 1 WHERE "id" = 'cmp_' || lpad(:c::text, 8, '0');""",
    ]):
        path = os.path.join(workdir, f"writer{i}.sql")
        with open(path, "w") as f:
            f.write(sql + "\n")
        scripts += ["-f", f"{path}@1"]
    return subprocess.Popen(["pgbench", "-n", "-c", "2", "-j", "1", "-R", str(WRITER_RATE), "-T", str(seconds),
                             *scripts, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def reads_under_writers(url, mode, companies, duration, workdir):
    """Case (a) idle, then while pgbench changes WRITER_RATE companies a second."""
    requests = [(f"/prospects?industry={suite.quote(i)}", {}) for i in suite.INDUSTRIES]
    settle(url)
    suite.run_wrk(requests, 2, workdir)
    idle = suite.run_wrk(requests, duration, workdir)
    since = suite.psql(url, "SELECT clock_timestamp()")
    writers = start_writers(url, companies, duration + 3, workdir)
    time.sleep(1.5)
    busy = suite.run_wrk(requests, duration, workdir)
    out, _ = writers.communicate()
    written = float(next((line.split("=")[1].split()[0] for line in out.splitlines() if line.startswith("tps")), "nan"))
    result = {"idle": idle, "writing": busy, "writer_tps": written}
    if mode == "incremental":
        rounds = log_rounds(url, since)
        times = [r["ms"] for r in rounds if r["ms"] is not None]
        result["rounds"] = {"count": len(rounds), "companies": sum(r["companies"] or 0 for r in rounds),
                            "p50_ms": percentile(times, 0.5), "p99_ms": percentile(times, 0.99)}
    return result


def commit_to_visible(url, mode):
    out = suite.sh(sys.executable, os.path.join(suite.ROOT, "bench", "commit_to_visible.py"), "--api", suite.API,
                   "--database-url", url, "--samples", str(SAMPLES[mode]), "--pause", str(PAUSE[mode]), "--json")
    return json.loads(out.strip().splitlines()[-1])


def round_costs(url):
    """Incremental rounds of k changed companies (their revenue changes, so every row of each is
    rewritten: the dearest kind of change) against a full rebuild, run as the applier runs them: in
    one warm session, REPEATABLE READ, the catalog lock first, no JIT."""
    all_companies = int(suite.psql(url, 'SELECT count(*) FROM "Company"'))
    everything = "{company_prospect_view,company_summary_view,prospect_search_view}"
    script = []
    for label, k, rebuild in [("warm-up", 1, "{}"), *[(str(k), k, "{}") for k in (1, 10, 100, 1000)], ("rebuild", 0, everything)]:
        script.append(f"""UPDATE "Company" SET "revenue" = COALESCE("revenue", 0) + 1
WHERE "id" IN (SELECT "id" FROM "Company" ORDER BY random() LIMIT {k});
BEGIN ISOLATION LEVEL REPEATABLE READ;
LOCK TABLE read_model_catalog IN SHARE ROW EXCLUSIVE MODE;
SELECT set_config('work_mem', '256MB', true), set_config('jit', 'off', true);
SELECT count(*) FROM maintain_incremental_read_models('incremental', '{rebuild}', 1.0);
SELECT 'round', '{label}', round((extract(epoch FROM clock_timestamp() - now()) * 1000)::numeric, 1);
COMMIT;""")
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-Atq"], input="\n".join(script),
                         check=True, capture_output=True, text=True).stdout
    took = {line.split("|")[1]: float(line.split("|")[2]) for line in out.splitlines() if line.startswith("round|")}
    costs = {k: took[str(k)] for k in (1, 10, 100, 1000)}
    for k, ms in costs.items():
        print(f"    round of {k} companies: {ms:.0f} ms", flush=True)
    rebuild = took["rebuild"]
    per_company = (costs[1000] - costs[1]) / 999
    print(f"    full rebuild: {rebuild:.0f} ms; cheaper than applying more than {rebuild / per_company:.0f} companies "
          f"({rebuild / per_company / all_companies:.1%} of them)", flush=True)
    return {"round_ms": costs, "rebuild_ms": rebuild, "per_company_ms": round(per_company, 2),
            "crossover_companies": round(rebuild / per_company), "crossover_share": round(rebuild / per_company / all_companies, 3)}


def postgres_cpu_ticks():
    """CPU used so far by every PostgreSQL process, the backends that already exited included (the
    postmaster's reaped children)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not f.read().startswith("postgres"):
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total


def writers_cpu(url, companies, workdir, rounds=8, transactions=3000):
    """PostgreSQL's CPU per single-row write transaction, 8 pgbench clients, with the change-capture
    triggers and without, in alternating rounds (medians). CPU is steadier than throughput on a machine
    shared with everything else; bench/run.py's throughput ratios are reported beside it."""
    scripts = {
        "insert": f"""\\set c random(1, {companies})
INSERT INTO "Prospect" ("id", "companyId", "firstName")
VALUES ('w_' || :client_id || '_' || random(), 'cmp_' || lpad(:c::text, 8, '0'), 'Writer');""",
        "update": f"""\\set c random(1, {companies})
UPDATE "Prospect" SET "updatedAt" = now() AT TIME ZONE 'UTC' WHERE "id" = 'prs_' || lpad(:c::text, 8, '0') || '_1';""",
    }
    paths = {}
    for name, sql in scripts.items():
        paths[name] = os.path.join(workdir, f"cpu_{name}.sql")
        with open(paths[name], "w") as f:
            f.write(sql.replace("\\\\", "\\") + "\n")
    samples = {(op, on): [] for op in scripts for on in (True, False)}
    for table in ('"Prospect"', "base_table_changes"):
        suite.psql(url, f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    try:
        for _ in range(rounds):
            for on in (True, False):
                suite.psql(url, f'ALTER TABLE "Prospect" {"ENABLE" if on else "DISABLE"} TRIGGER USER')
                for op in scripts:
                    suite.psql(url, "CHECKPOINT")
                    before = postgres_cpu_ticks()
                    suite.sh("pgbench", "-n", "-M", "prepared", "-c", "8", "-j", "2", "-t", str(transactions),
                             "-f", paths[op], url)
                    ticks = postgres_cpu_ticks() - before
                    samples[(op, on)].append(ticks / os.sysconf("SC_CLK_TCK") / (8 * transactions) * 1e6)
    finally:
        suite.psql(url, 'ALTER TABLE "Prospect" ENABLE TRIGGER USER')
        for table in ('"Prospect"', "base_table_changes"):
            suite.psql(url, f"ALTER TABLE {table} RESET (autovacuum_enabled)")
        suite.psql(url, """DELETE FROM "Prospect" WHERE "id" LIKE 'w\\_%'""")
    result = {}
    for op in scripts:
        with_triggers = statistics.median(samples[(op, True)])
        without = statistics.median(samples[(op, False)])
        result[op] = {"with_us": round(with_triggers, 1), "without_us": round(without, 1),
                      "ratio": round(without / with_triggers, 2)}
    return result


def bench_mode(url, size, mode, duration, workdir):
    result = {"mode": mode, "conversion": convert(url, mode, workdir)}
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn", VIEW_MAINTENANCE=mode)
    if suite.psql(url, "SELECT bool_and(populated) FROM read_models") != "t":
        suite.sh(suite.BINARY, "refresh", env=env)
    for view in ("company_prospect_view", "company_summary_view", "prospect_search_view"):
        suite.psql(url, f"VACUUM ANALYZE {view}")
    server = suite.start_server(url, {"VIEW_MAINTENANCE": mode})
    try:
        result["commit_to_visible"] = commit_to_visible(url, mode)
        print(f"  {mode}: commit to visible {result['commit_to_visible']}", flush=True)
        result["reads"] = reads_under_writers(url, mode, suite.SIZES[size], duration, workdir)
        reads = result["reads"]
        print(f"  {mode}: reads idle {reads['idle']} / under writers {reads['writing']} "
              f"({reads['writing']['rps'] / reads['idle']['rps']:.2f}); {reads.get('rounds', '')}", flush=True)
    finally:
        server.terminate()
        server.wait()
    if mode == "incremental":
        result["rounds"] = round_costs(url)
    return result


def bench_size(size, args, workdir):
    url = prepare(args.server, size)
    prospects = int(suite.psql(url, 'SELECT count(*) FROM "Prospect"'))
    print(f"== {size}: {prospects} prospects", flush=True)
    modes = args.modes.split(",")
    if size == "10m" and not args.refresh_at_10m:
        modes = [m for m in modes if m == "incremental"]
    result = {"size": size, "prospects": prospects,
              "command": " ".join(["bench/freshness.py"] + sys.argv[1:]),
              "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              "modes": [bench_mode(url, size, m, args.duration, workdir) for m in modes]}
    if not args.skip_writers:
        result["writers_cpu"] = writers_cpu(url, suite.SIZES[size], workdir)
        print(f"  writers' PostgreSQL CPU per transaction: {result['writers_cpu']}", flush=True)
        result["writers"] = suite.writers_cost(url, args.duration, workdir)
        print(f"  writers: {result['writers']}", flush=True)
    return result


def merged_with_earlier(results):
    """This run's sizes, and the sizes an earlier run measured that this one did not (from the raw
    figures in bench/RESULTS.md), so that an optional size such as 10m can be run on its own."""
    earlier = []
    if os.path.exists(suite.RESULTS):
        text = open(suite.RESULTS).read()
        section = text.split("<!-- freshness:begin -->")[-1].split("<!-- freshness:end -->")[0]
        if "```json" in section:
            earlier = json.loads(section.split("```json")[1].split("```")[0])
    measured = {r["size"] for r in results}
    order = list(suite.SIZES)
    combined = [r for r in earlier if r["size"] not in measured] + results
    return sorted(combined, key=lambda r: order.index(r["size"]))


def describe(results, args):
    lines = ["## Freshness: refresh and incremental maintenance", "",
             "Written by `bench/freshness.py` (each size says which run measured it; same machine as above). "
             f"Commit to visible: single-row inserts, {SAMPLES['refresh']} in refresh mode (1 s debounce), "
             f"{SAMPLES['incremental']} in incremental mode (250 ms poll); p99 is nearest-rank (of 20: the worst). "
             f"Reads: case (a) with wrk as above, idle and while pgbench changes {WRITER_RATE} companies a second.", ""]
    for r in results:
        lines += [f"### {r['size']}: {r['prospects']:,} prospects", "", f"Measured by `{r.get('command', 'bench/freshness.py')}` on {r.get('date', 'an earlier run')}.", "",
                  "| mode | commit to visible median / p99 / worst (s) | (a) idle req/s, p99 ms | (a) under writers req/s, p99 ms | ratio | applies meanwhile |",
                  "|---|---|---|---|---|---|"]
        for m in r["modes"]:
            c, reads = m["commit_to_visible"], m["reads"]
            rounds = reads.get("rounds")
            applied = (f"{rounds['count']} rounds, {rounds['companies']} companies, p50 {rounds['p50_ms']} ms, p99 {rounds['p99_ms']} ms"
                       if rounds else "refreshes (CONCURRENTLY)")
            lines.append(f"| {m['mode']} | {c['median_s']} / {c['p99_s']} / {c['worst_s']} | "
                         f"{reads['idle']['rps']:.0f}, {reads['idle']['p99_ms']:.1f} | "
                         f"{reads['writing']['rps']:.0f}, {reads['writing']['p99_ms']:.1f} | "
                         f"{reads['writing']['rps'] / reads['idle']['rps']:.2f} | {applied} |")
        lines.append("")
        for m in r["modes"]:
            if m["conversion"]:
                conv = m["conversion"]
                lines.append(f"- Conversion {conv['from']} → {conv['to']} in {conv['seconds']} s while reads went on: "
                             f"{conv['reads']} reads, {conv['read_errors']} errors, slowest {conv['slowest_read_ms']} ms. `migrate` said:")
                lines += [f"  - `{line.strip()}`" for line in conv["lines"]]
            if "rounds" in m:
                rc = m["rounds"]
                lines.append(f"- Incremental round cost (revenue of k random companies changed, every row of each rewritten): "
                             + ", ".join(f"{k} → {v:.0f} ms" for k, v in rc["round_ms"].items())
                             + f"; full rebuild {rc['rebuild_ms']:.0f} ms; a rebuild is cheaper beyond {rc['crossover_companies']} "
                             f"companies ({rc['crossover_share']:.1%} of all).")
        if "writers_cpu" in r:
            cpu = r["writers_cpu"]
            lines.append("- Writers' cost, PostgreSQL CPU per single-row transaction (8 pgbench clients, 8 alternating "
                         "rounds, medians): " + "; ".join(
                             f"{op.upper()} {c['with_us']} µs with the change-capture triggers vs {c['without_us']} µs "
                             f"without (throughput ceiling ratio {c['ratio']})" for op, c in cpu.items()) + ".")
        if "writers" in r:
            w = r["writers"]
            lines.append(f"- Writers, 8 pgbench clients, {len(w['rounds'])} alternating rounds (medians): INSERT "
                         f"{w['with triggers']['insert_tps']:.0f} TPS with the change-capture triggers vs "
                         f"{w['without triggers']['insert_tps']:.0f} without (paired ratios "
                         f"{', '.join(f'{x:.2f}' for x in w['insert_tps_ratios'])}); UPDATE "
                         f"{w['with triggers']['update_tps']:.0f} vs {w['without triggers']['update_tps']:.0f} "
                         f"(paired ratios {', '.join(f'{x:.2f}' for x in w['update_tps_ratios'])}).")
        lines.append("")
    lines += suite.raw_figures(results)
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100k,1m", help="comma-separated: 100k, 1m, 10m")
    parser.add_argument("--modes", default="refresh,incremental")
    parser.add_argument("--duration", type=int, default=10, help="seconds per read measurement")
    parser.add_argument("--skip-writers", action="store_true", help="skip the writers' cost (about 2 minutes a size)")
    parser.add_argument("--refresh-at-10m", action="store_true", help="also measure refresh mode at 10m (slow)")
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=suite.ROOT)
    with tempfile.TemporaryDirectory() as workdir:
        results = [bench_size(size, args, workdir) for size in args.sizes.split(",")]
    suite.write_section("freshness", describe(merged_with_earlier(results), args))
    print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
