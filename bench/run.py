#!/usr/bin/env python3
"""The benchmark suite: `bench/run.py [--sizes 100k,1m] [--duration 10]` rewrites bench/RESULTS.md.

For each data size it seeds a database (once; reused while its size matches), starts a release
`prospect-api serve`, and measures, side by side:

  - API throughput and latency with wrk (fixed connections, parameters varied per request) for
    (a) /prospects?industry=X, (b) a deep keyset page of it, (c) /companies?country=X&sort=-prospect_count,
    (d) /search?q=term, (e) (a) with count=exact, (f) If-None-Match revalidation (304);
  - the limit: the same SQL the API runs per request (its data statements), through pgbench
    with the same client count, and the ratio API req/s / pgbench TPS;
  - the design's claim: the same rows computed by a live JOIN/aggregate over the base tables (pgbench);
  - reads during refresh: (a) under load while all three views are refreshed CONCURRENTLY in a loop;
  - REFRESH ... CONCURRENTLY duration per view, and the server's peak RSS under load;
  - commit-to-visible latency of a single-row insert (bench/commit_to_visible.py);
  - the writers' cost: single-row INSERT/UPDATE throughput on "Prospect" from 8 pgbench clients with
    the notify triggers and without them.

Needs: cargo, psql, pgbench, wrk (Debian packages postgresql-client, wrk), PostgreSQL on DATABASE_SERVER
(default postgres://postgres@127.0.0.1:5432). Standard library only.
"""
import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "prospect-api")
PORT = 18090
API = f"http://127.0.0.1:{PORT}"
CLIENTS = 8
WRITER_ROUNDS = 3
SIZES = {"100k": 10_300, "1m": 103_000, "10m": 1_030_000}  # companies; about 9.7 prospects each

INDUSTRIES = ["Software", "Financial Services", "Healthcare", "Retail", "Manufacturing", "Telecommunications",
              "Education", "Real Estate", "Transportation", "Energy", "Insurance", "Media"]
COUNTRIES = ["United States", "United Kingdom", "Germany", "France", "Canada", "India", "Australia",
             "Netherlands", "Spain", "Italy", "Brazil", "Japan"]
TERMS = ["smith", "garcia", "patel", "engineering", "sales manager", "acme", "globex labs", "olivia",
         "director", "tanaka", "vertex", "finance"]


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout


def psql(url, sql):
    return sh("psql", url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql).strip()


def http_get(path, headers=None):
    request = urllib.request.Request(API + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def quote(text):
    return urllib.request.quote(text, safe="")


# ---------------------------------------------------------------------------------------------------
# Data and server


def prepare_database(server, size):
    url = f"{server}/prospect_api_bench_{size}"
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn")
    subprocess.run([BINARY, "migrate"], check=True, env=env, capture_output=True)
    companies = int(psql(url, 'SELECT count(*) FROM "Company"'))
    if companies != SIZES[size]:
        print(f"  seeding {size} ...", flush=True)
        out = sh(BINARY, "seed", "--companies", str(SIZES[size]), "--replace", "--refresh", env=env)
        print("  " + out.replace("\n", "\n  ").rstrip(), flush=True)
    # Rows an interrupted writers' run left behind, then the same starting point every run: no dead
    # rows, fresh planner statistics (the refresh that follows brings the views up to date).
    psql(url, """DELETE FROM "Prospect" WHERE "id" LIKE 'w\\_%'""")
    for table in ('"Company"', '"Prospect"'):
        psql(url, f"VACUUM ANALYZE {table}")
    return url


# The suite measures what a request costs the API and PostgreSQL, so it runs without the response
# cache, which would answer its repeated requests from memory (bench/mixed.py measures the cache).
NO_RESPONSE_CACHE = {"RESPONSE_CACHE_BYTES": "0"}


def start_server(url, extra_env=None, port=PORT, binary=BINARY, ready="/readyz"):
    """`binary serve` on `port` over the database `url`, once `ready` answers 200 (`/healthz`: live,
    before the read models are populated)."""
    env = dict(os.environ, DATABASE_URL=url, BIND_ADDR=f"127.0.0.1:{port}", RUST_LOG="warn",
               REFRESH_INTERVAL="0", **(extra_env or {}))
    server = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=30) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"the server on port {port} did not answer 200 on {ready}")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------------
# Request sets: each case is a list of (path, headers) that wrk cycles through at random


def case_requests():
    cases = {}
    cases["a"] = [(f"/prospects?industry={quote(i)}", {}) for i in INDUSTRIES]
    deep = []
    for industry in INDUSTRIES[:6]:
        path = f"/prospects?industry={quote(industry)}&limit=50"
        cursor = None
        for _ in range(40):  # 40 pages of 50 in: rows 2,000 to 2,050
            status, _, body = http_get(path + (f"&cursor={cursor}" if cursor else ""))
            cursor = json.loads(body)["next_cursor"]
            if not cursor:
                break
        if cursor:
            deep.append((f"{path}&cursor={cursor}", {}))
    cases["b"] = deep
    cases["c"] = [(f"/companies?country={quote(c)}&sort=-prospect_count", {}) for c in COUNTRIES]
    cases["d"] = [(f"/search?q={quote(t)}", {}) for t in TERMS]
    cases["e"] = [(f"/prospects?industry={quote(i)}&count=exact", {}) for i in INDUSTRIES]
    revalidate = []
    for path, _ in cases["a"]:
        _, headers, _ = http_get(path)
        etag = {k.lower(): v for k, v in headers.items()}["etag"]
        revalidate.append((path, {"If-None-Match": etag}))
    cases["f"] = revalidate
    return cases


WRK_SCRIPT = r"""
local requests = {}
local file = io.open(os.getenv("WRK_REQUESTS"))
for line in file:lines() do
  local fields = {}
  for field in line:gmatch("[^\t]+") do table.insert(fields, field) end
  local headers = {}
  for i = 2, #fields do
    local name, value = fields[i]:match("^([^:]+): (.*)$")
    headers[name] = value
  end
  table.insert(requests, wrk.format("GET", fields[1], headers))
end
file:close()
local statuses = {}
request = function() return requests[math.random(#requests)] end
response = function(status) statuses[status] = (statuses[status] or 0) + 1 end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %f %f %f %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def ensure_wrk():
    """wrk, from Debian's packages, on a machine that lacks it (every load script calls run_wrk)."""
    if not shutil.which("wrk"):
        print("installing Debian's wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)


def run_wrk(requests, duration, workdir):
    ensure_wrk()
    listing = os.path.join(workdir, "requests.txt")
    with open(listing, "w") as f:
        for path, headers in requests:
            f.write("\t".join([path] + [f"{name}: {value}" for name, value in headers.items()]) + "\n")
    script = os.path.join(workdir, "requests.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    out = sh("wrk", "-t2", f"-c{CLIENTS}", f"-d{duration}s", "-s", script, API, env=dict(os.environ, WRK_REQUESTS=listing))
    fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
    count, micros, p50, p99, mean, socket_errors, status_errors = fields
    return {"rps": int(count) / (int(micros) / 1e6), "p50_ms": float(p50) / 1000, "p99_ms": float(p99) / 1000,
            "errors": int(socket_errors) + int(status_errors)}


# ---------------------------------------------------------------------------------------------------
# The same SQL through pgbench: one file per parameter value, equally weighted


PROSPECT_COLUMNS = """prospect_id, salutation, first_name, last_name, full_name, email, job_title, job_title_level,
department, job_title_link, prospect_address, prospect_city, prospect_state, prospect_country, prospect_zip_code,
prospect_phone, prospect_mobile_phone, prospect_created_at, prospect_updated_at, company_id, domain, company_name,
industry, min_employee_size, max_employee_size, revenue, formatted_revenue, company_address, company_city,
company_state, company_country, company_zip_code, company_phone, company_mobile_phone, company_created_at,
company_updated_at"""


def literal(value):
    return "'" + value.replace("'", "''") + "'"


SEARCH_COLUMNS = """prospect_id, email, first_name, last_name, full_name, job_title, job_title_level, department,
prospect_city, prospect_country, company_id, domain, company_name, industry, revenue, company_city, company_country"""
NAME_ORDER = "COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id"


def search_statement(term):
    """The statement of a ranked search's first page (src/views/prospect_search.rs): search_prospects()
    ranks (migration 0011), the page's rows are joined to it."""
    columns = ", ".join(f"v.{c.strip()}" for c in SEARCH_COLUMNS.split(","))
    return f"""SELECT {columns}, s.score FROM search_prospects({literal(term)}, '{{}}', true, NULL, NULL, NULL, NULL, NULL, 51) s
JOIN prospect_search_view v ON v.prospect_id = s.prospect_id ORDER BY s.score DESC, s.prospect_id;"""


def api_sql(case, value, url):
    """The statements the API runs for one request, with its parameters as literals. The freshness
    read is not among them: each instance reads it once a second per view (FRESHNESS_CACHE_TTL)."""
    if case in ("a", "e"):
        data = f"""SELECT {PROSPECT_COLUMNS} FROM company_prospect_view
WHERE prospect_id IS NOT NULL AND industry = {literal(value)}
ORDER BY COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id LIMIT 51;"""
        if case == "e":
            data += f"\nSELECT count(*) FROM company_prospect_view WHERE prospect_id IS NOT NULL AND industry = {literal(value)};"
        return data
    if case == "c":
        return f"""SELECT company_id, domain, name, industry, min_employee_size, max_employee_size, revenue, formatted_revenue, address,
city, state, country, prospect_count, department_count, job_level_count, last_prospect_update
FROM company_summary_view WHERE country = {literal(value)} ORDER BY prospect_count DESC, company_id DESC LIMIT 51;"""
    if case == "d":
        return search_statement(value)
    raise ValueError(case)


def live_sql(case, value):
    """The same rows computed from the base tables at query time (what the views save)."""
    if case == "a":
        return f"""SELECT c."id", c."name", p."id", CASE WHEN p."firstName" <> '' AND p."lastName" <> ''
  THEN p."firstName" || ' ' || p."lastName" ELSE COALESCE(NULLIF(p."firstName", ''), NULLIF(p."lastName", '')) END,
  format_revenue(c."revenue"), p.*, c.*
FROM "Company" c JOIN "Prospect" p ON p."companyId" = c."id" WHERE c."industry" = {literal(value)}
ORDER BY c."name", COALESCE(p."lastName", ''), COALESCE(p."firstName", ''), p."id" LIMIT 51;"""
    if case == "c":
        return f"""SELECT c."id", c."name", count(p."id") AS prospect_count, count(DISTINCT p."department"),
  count(DISTINCT p."jobTitleLevel"), max(p."updatedAt")
FROM "Company" c LEFT JOIN "Prospect" p ON p."companyId" = c."id" WHERE c."country" = {literal(value)}
GROUP BY c."id" ORDER BY prospect_count DESC, c."id" DESC LIMIT 51;"""
    if case == "d":
        conditions = " AND ".join(
            f"""lower(concat_ws(' ', COALESCE(p."firstName", ''), COALESCE(p."lastName", ''), COALESCE(p."email", ''),
  COALESCE(p."jobTitle", ''), COALESCE(c."name", ''), COALESCE(c."industry", ''))) LIKE {literal('%' + t + '%')}"""
            for t in value.split())
        return f"""SELECT p."id", p."email", c."name" FROM "Prospect" p JOIN "Company" c ON c."id" = p."companyId"
WHERE {conditions} ORDER BY c."name", COALESCE(p."lastName", ''), COALESCE(p."firstName", ''), p."id" LIMIT 51;"""
    raise ValueError(case)


def run_pgbench(url, scripts, duration, workdir, clients=CLIENTS, mode="simple"):
    files = []
    for i, sql in enumerate(scripts):
        path = os.path.join(workdir, f"script{i}.sql")
        with open(path, "w") as f:
            f.write(sql + "\n")
        files += ["-f", f"{path}@1"]
    out = sh("pgbench", "-n", "-M", mode, "-c", str(clients), "-j", "2", "-T", str(duration), *files, url)
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    latency = re.search(r"latency average = ([0-9.]+) ms", out)
    return {"tps": tps, "latency_ms": float(latency.group(1)) if latency else None}


# ---------------------------------------------------------------------------------------------------


def refresh_durations(url):
    rows = psql(url, """SELECT string_agg(view_name || '=' || duration_ms, ',' ORDER BY view_name)
                        FROM refresh_materialized_views('sql')""")
    for view in ("company_prospect_view", "company_summary_view", "prospect_search_view"):
        psql(url, f"VACUUM ANALYZE {view}")
    return {kv.split("=")[0]: int(kv.split("=")[1]) for kv in rows.split(",")}


def writers_cost(url, duration, workdir):
    company = psql(url, 'SELECT "id" FROM "Company" ORDER BY "id" LIMIT 1')
    count = int(psql(url, 'SELECT count(*) FROM "Prospect"'))
    insert = f"""\\set n random(1, 1000000000)
INSERT INTO "Prospect" ("id", "companyId", "firstName") VALUES ('w_' || :client_id || '_' || :n || '_' || random(), '{company}', 'Writer');"""
    update = """\\set n random(1, 1000)
UPDATE "Prospect" SET "updatedAt" = now() AT TIME ZONE 'UTC' WHERE "id" = (SELECT "id" FROM "Prospect" WHERE "companyId" = 'cmp_00000001' OFFSET (:n % 5) LIMIT 1);"""
    # Alternating short rounds, paired, each run starting from a checkpoint with autovacuum held off:
    # this machine's write throughput drifts (checkpoints, autovacuum) by more than the effect
    # measured, so each round compares neighbours that start alike.
    def measure(sql):
        psql(url, "CHECKPOINT")
        return run_pgbench(url, [sql], max(2, duration // 2), workdir, clients=8, mode="prepared")["tps"]

    rounds = []
    for table in ('"Prospect"', "base_table_changes"):
        psql(url, f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    try:
        for _ in range(WRITER_ROUNDS):
            one = {}
            for label, enable in (("with triggers", True), ("without triggers", False)):
                if not enable:
                    psql(url, 'ALTER TABLE "Prospect" DISABLE TRIGGER USER')
                try:
                    one[label] = {"insert_tps": measure(insert), "update_tps": measure(update)}
                finally:
                    psql(url, 'ALTER TABLE "Prospect" ENABLE TRIGGER USER')
            rounds.append(one)
    finally:
        for table in ('"Prospect"', "base_table_changes"):
            psql(url, f"ALTER TABLE {table} RESET (autovacuum_enabled)")
    results = {"rounds": rounds}
    for label in ("with triggers", "without triggers"):
        results[label] = {op: statistics.median(r[label][op] for r in rounds) for op in ("insert_tps", "update_tps")}
    for op in ("insert_tps", "update_tps"):
        ratios = sorted(r["with triggers"][op] / r["without triggers"][op] for r in rounds)
        results[f"{op}_ratios"] = ratios
    psql(url, """DELETE FROM "Prospect" WHERE "id" LIKE 'w\\_%'""")
    del count
    return results


def bench_size(size, server_url, duration, samples, workdir):
    url = prepare_database(server_url, size)
    prospects = int(psql(url, 'SELECT count(*) FROM "Prospect"'))
    result = {"size": size, "prospects": prospects}
    print(f"== {size}: {prospects} prospects", flush=True)

    result["refresh_ms"] = refresh_durations(url)
    print(f"  refresh CONCURRENTLY (ms): {result['refresh_ms']}", flush=True)

    server = start_server(url, NO_RESPONSE_CACHE)
    try:
        cases = case_requests()
        result["api"] = {}
        result["pgbench"] = {}
        result["live"] = {}
        values = {"a": INDUSTRIES, "b": None, "c": COUNTRIES, "d": TERMS, "e": INDUSTRIES}
        for case, requests in cases.items():
            run_wrk(requests, 2, workdir)  # warm up
            result["api"][case] = run_wrk(requests, duration, workdir)
            print(f"  ({case}) API {result['api'][case]}", flush=True)
            if case in ("a", "c", "d", "e"):
                scripts = [api_sql(case, v, url) for v in values[case]]
                result["pgbench"][case] = run_pgbench(url, scripts, duration, workdir)
                print(f"  ({case}) pgbench same SQL {result['pgbench'][case]}", flush=True)
            if case in ("a", "c", "d"):
                result["live"][case] = run_pgbench(url, [live_sql(case, v) for v in values[case]], duration, workdir)
                print(f"  ({case}) pgbench live JOIN {result['live'][case]}", flush=True)
        result["rss_mb"] = peak_rss_mb(server.pid)

        # Reads while the views are refreshed concurrently in a loop.
        idle = run_wrk(cases["a"], duration, workdir)
        looper = subprocess.Popen(["bash", "-c", f"while true; do psql '{url}' -qAtc 'SELECT count(*) FROM refresh_materialized_views()' >/dev/null; done"])
        time.sleep(1)
        try:
            busy = run_wrk(cases["a"], duration, workdir)
        finally:
            looper.terminate()
            looper.wait()
            subprocess.run(["psql", url, "-qAtc", "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%refresh_materialized_views%' AND pid <> pg_backend_pid()"], capture_output=True)
        result["during_refresh"] = {"idle": idle, "refreshing": busy}
        print(f"  during refresh: idle {idle} / refreshing {busy}", flush=True)
        result["rss_mb"] = max(result["rss_mb"], peak_rss_mb(server.pid))
    finally:
        server.terminate()
        server.wait()

    # Commit-to-visible with the default change watching (polling) and debounce.
    server = start_server(url, {"REFRESH_DEBOUNCE": "1s", **NO_RESPONSE_CACHE})
    try:
        out = sh(sys.executable, os.path.join(ROOT, "bench", "commit_to_visible.py"), "--api", API,
                 "--database-url", url, "--samples", str(samples), "--json")
        result["commit_to_visible"] = json.loads(out.strip().splitlines()[-1])
        print(f"  commit to visible: {result['commit_to_visible']}", flush=True)
    finally:
        server.terminate()
        server.wait()

    result["writers"] = writers_cost(url, duration, workdir)
    print(f"  writers: {result['writers']}", flush=True)
    return result


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def write_results(results, args):
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{' '.join(['bench/run.py'] + sys.argv[1:])}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
        f"{psql(args.server + '/postgres', 'SELECT version()').split(' on ')[0]}, API and PostgreSQL on the same machine.",
        f"Load: wrk, 2 threads, {CLIENTS} connections, {args.duration} s per case after a 2 s warm-up, a random "
        "parameter per request (12 industries / countries / search terms). pgbench: the same client count, "
        f"{args.duration} s, one script per parameter value, simple protocol (planned per execution, as the API's "
        "force_custom_plan).",
        "",
    ]
    names = {"a": "(a) /prospects?industry=X", "b": "(b) deep keyset page (row 2,000)",
             "c": "(c) /companies?country=X&sort=-prospect_count", "d": "(d) /search?q=term",
             "e": "(e) (a) with count=exact", "f": "(f) If-None-Match revalidation (304)"}
    for r in results:
        lines += [f"## {r['size']}: {r['prospects']:,} prospects", "",
                  "| case | API req/s | p50 ms | p99 ms | errors | same SQL, pgbench TPS | API / pgbench | live JOIN TPS | views / live |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for case, name in names.items():
            api = r["api"].get(case)
            if not api:
                continue
            pg = r["pgbench"].get(case, {}).get("tps")
            live = r["live"].get(case, {}).get("tps")
            lines.append(f"| {name} | {api['rps']:.0f} | {api['p50_ms']:.2f} | {api['p99_ms']:.2f} | {api['errors']} | "
                         f"{pg and f'{pg:.0f}' or '—'} | {ratio(api['rps'], pg) if pg else '—'} | "
                         f"{live and f'{live:.1f}' or '—'} | {ratio(pg, live) if pg and live else '—'} |")
        a = r["api"]["a"]["p50_ms"], r["api"]["b"]["p50_ms"] if r["api"].get("b") else None
        idle, busy = r["during_refresh"]["idle"], r["during_refresh"]["refreshing"]
        w = r["writers"]
        lines += [
            "",
            f"- Deep page (b) p50 / first page (a) p50: {ratio(r['api']['b']['p50_ms'], r['api']['a']['p50_ms']) if r['api'].get('b') else 'n/a'} (target ≤ 1.3).",
            f"- Reads during refresh, case (a): idle p50 {idle['p50_ms']:.2f} ms / p99 {idle['p99_ms']:.2f} ms; while all three views are "
            f"refreshed CONCURRENTLY in a loop p50 {busy['p50_ms']:.2f} ms / p99 {busy['p99_ms']:.2f} ms "
            f"(p99 ratio {ratio(busy['p99_ms'], idle['p99_ms'])}, target ≤ 2); errors {busy['errors']}.",
            f"- REFRESH MATERIALIZED VIEW CONCURRENTLY, nothing changed (ms): " + ", ".join(f"{k} {v}" for k, v in sorted(r['refresh_ms'].items())) + ".",
            f"- Server peak RSS under load: {r['rss_mb']:.1f} MB (target ≤ 64).",
            f"- Commit to visible (single-row insert, default 1 s debounce): median {r['commit_to_visible']['median_s']} s, "
            f"worst {r['commit_to_visible']['worst_s']} s over {r['commit_to_visible']['samples']} inserts.",
            f"- Writers, 8 pgbench clients, {len(w['rounds'])} alternating rounds (medians): INSERT "
            f"{w['with triggers']['insert_tps']:.0f} TPS with the triggers vs {w['without triggers']['insert_tps']:.0f} without "
            f"(paired ratios {', '.join(f'{x:.2f}' for x in w['insert_tps_ratios'])}); UPDATE "
            f"{w['with triggers']['update_tps']:.0f} vs {w['without triggers']['update_tps']:.0f} "
            f"(paired ratios {', '.join(f'{x:.2f}' for x in w['update_tps_ratios'])}). Target ≥ 0.9.",
            "",
        ]
    lines += raw_figures(results, "##")
    write_section("suite", "\n".join(lines))


RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")


def bench_main(doc, section, bench, describe, options):
    """What a bench script's main does: its options (`options(parser)` adds its own to --size and
    --server), a release build, the run, the result printed and written as its section of
    bench/RESULTS.md. Returns the result."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", help="100k, 1m or 10m")
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    options(parser)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=ROOT)
    result = bench(args)
    print(json.dumps(result, indent=1))
    write_section(section, describe(result))
    print("wrote bench/RESULTS.md")
    return result


def raw_figures(result, heading="####"):
    """The closing lines of a results section: the result itself, as JSON."""
    return [f"{heading} Raw figures", "", "```json", json.dumps(result, indent=1), "```", ""]


def measured_on(url):
    """The prospects of the database at `url` and the time now (UTC), as a results section states them."""
    prospects = int(psql(url, 'SELECT count(*) FROM "Prospect"'))
    return prospects, datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def write_section(name, text):
    """Replaces this script's section of bench/RESULTS.md (between its markers), keeping the others:
    bench/run.py, bench/freshness.py and bench/mixed.py each own one."""
    sections = {}
    if os.path.exists(RESULTS):
        current = open(RESULTS).read()
        for found in re.finditer(r"<!-- (\w+):begin -->\n(.*?)<!-- \1:end -->", current, re.S):
            sections[found.group(1)] = found.group(2)
    sections[name] = text.rstrip() + "\n"
    order = ["suite", "freshness", "mixed", "miss", "ab", "ab_access", "sort_plans", "facets", "csv", "scale_out",
             "relevance", "search_latency", "filters", "admin", "memory"]
    with open(RESULTS, "w") as f:
        for key in sorted(sections, key=lambda k: order.index(k) if k in order else len(order)):
            f.write(f"<!-- {key}:begin -->\n{sections[key]}<!-- {key}:end -->\n\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100k,1m", help="comma-separated: 100k, 1m")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load case")
    parser.add_argument("--samples", type=int, default=20, help="inserts for commit-to-visible")
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    random.seed(42)
    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory() as workdir:
        results = [bench_size(size, args.server, args.duration, args.samples, workdir) for size in args.sizes.split(",")]
    write_results(results, args)
    print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
