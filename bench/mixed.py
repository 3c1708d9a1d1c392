#!/usr/bin/env python3
"""A realistic mixed read load, with the response cache and without, against the same statements
through pgbench: `bench/mixed.py [--size 1m] [--duration 15] [--modes refresh,incremental]` rewrites
its section of bench/RESULTS.md (bench/run.py and bench/freshness.py own the others).

The mix: a few hundred distinct requests (prospect lists by industry × company country × two sorts,
some of their next pages, company lists by country × two sorts, searches, company pages and their
prospects), drawn Zipf-distributed (s = ZIPF_S over a seeded random ranking), plus a uniform tail of
cold requests (COLD_SHARE: single prospects by id, thousands of them, rarely repeated). wrk draws
from a pre-sampled sequence of the mix, so every run sees the same distribution.

Measured, side by side in one run:
  - the mix with the cache (RESPONSE_CACHE_BYTES default) and without it (0): req/s, p50/p99, hit
    ratio (from /metrics), the server's peak RSS;
  - the same statements through pgbench (8 clients), weighted as the mix draws them: what the
    database alone can serve, and the ratios API ÷ pgbench;
  - the mix with the cache while the data changes: in refresh mode while all views are refreshed in a
    loop; in incremental mode while writers change 50 companies a second.
  - beside each of those runs, the changes alone with no reads: the share of the machine's CPU they
    take (/proc/stat), which the reads cannot have while the data changes. On a small machine it
    bounds the ratio of the two runs, whatever the cache does.

Needs what bench/run.py needs (psql, pgbench, wrk). Standard library only.
"""
import argparse
import collections
import datetime
import json
import os
import random
import statistics
import sys
import tempfile
import subprocess
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import freshness  # noqa: E402  (conversions between the modes, the writers)
import run as suite  # noqa: E402  (the shared helpers: data, server, wrk, pgbench)

ZIPF_S = 1.1
COLD_SHARE = 0.1
DRAWS = 100_000
COLD_IDS = 20_000
PROSPECTS = suite.PROSPECT_COLUMNS
NAME_ORDER = suite.NAME_ORDER
SUMMARY_COLUMNS = """company_id, domain, name, industry, min_employee_size, max_employee_size, revenue,
formatted_revenue, address, city, state, country, prospect_count, department_count, job_level_count,
last_prospect_update"""
lit = suite.literal


def prospect_list_sql(industry, country, sort, after=None):
    """The statement of `/prospects?industry=…&company_country=…[&sort=-revenue]` as the custom plan
    runs it (src/views/company_prospects.rs): the unused optional filters fold away."""
    where = f"prospect_id IS NOT NULL AND industry = {lit(industry)} AND company_country = {lit(country)}"
    if sort == "-revenue":
        order = "COALESCE(revenue, '-9223372036854775808'::bigint) DESC, prospect_id DESC"
    else:
        order = NAME_ORDER
        if after:
            where += (f" AND ({NAME_ORDER}) > ({lit(after['company_name'] or '')}, {lit(after['last_name'] or '')},"
                      f" {lit(after['first_name'] or '')}, {lit(after['prospect_id'])})")
    return f"SELECT {PROSPECTS} FROM company_prospect_view WHERE {where} ORDER BY {order} LIMIT 51;"


def company_list_sql(country, sort):
    order = ("prospect_count DESC, company_id DESC" if sort == "-prospect_count"
             else "COALESCE(revenue, '-9223372036854775808'::bigint) DESC, company_id DESC")
    return f"SELECT {SUMMARY_COLUMNS} FROM company_summary_view WHERE country = {lit(country)} ORDER BY {order} LIMIT 51;"


def company_sql(company_id):
    return f"SELECT {SUMMARY_COLUMNS} FROM company_summary_view WHERE company_id = {lit(company_id)};"


def company_prospects_sql(company_id):
    return (f"SELECT EXISTS (SELECT 1 FROM company_prospect_view WHERE company_id = {lit(company_id)});\n"
            f"SELECT {PROSPECTS} FROM company_prospect_view WHERE prospect_id IS NOT NULL"
            f" AND company_id = {lit(company_id)} ORDER BY {NAME_ORDER} LIMIT 51;")


def distinct_requests(url, rng):
    """(path, SQL) for every distinct request of the mix. Next pages take their cursor from the API
    (the server must be running) and their keyset values from the first page's last row."""
    q = suite.quote
    requests = []
    for industry in suite.INDUSTRIES:
        for country in suite.COUNTRIES:
            for sort in ("company_name", "-revenue"):
                path = f"/prospects?industry={q(industry)}&company_country={q(country)}"
                if sort != "company_name":
                    path += f"&sort={sort}"
                requests.append((path, prospect_list_sql(industry, country, sort)))
    firsts = rng.sample([r for r in requests if "sort=" not in r[0]], 40)
    for path, _ in firsts:
        status, _, body = suite.http_get(path)
        page = json.loads(body)
        if status == 200 and page["next_cursor"]:
            params = dict(pair.split("=", 1) for pair in path.split("?", 1)[1].split("&"))
            industry, country = (urllib.parse.unquote(params["industry"]), urllib.parse.unquote(params["company_country"]))
            requests.append((f"{path}&cursor={page['next_cursor']}",
                             prospect_list_sql(industry, country, "company_name", after=page["data"][-1])))
    for country in suite.COUNTRIES:
        for sort in ("-prospect_count", "-revenue"):
            requests.append((f"/companies?country={q(country)}&sort={sort}", company_list_sql(country, sort)))
    for term in suite.TERMS:
        requests.append((f"/search?q={q(term)}", suite.search_statement(term)))
    companies = suite.psql(url, """SELECT string_agg(company_id, ',') FROM (SELECT company_id FROM company_summary_view
                                   WHERE prospect_count > 0 ORDER BY md5(company_id) LIMIT 60) c""").split(",")
    for company in companies:
        requests.append((f"/companies/{company}", company_sql(company)))
        requests.append((f"/companies/{company}/prospects", company_prospects_sql(company)))
    return requests


def cold_ids(url):
    """Prospects picked uniformly: the cold tail, each rarely asked twice."""
    return suite.psql(url, f"""SELECT string_agg("id", ',') FROM (SELECT "id" FROM "Prospect"
                               ORDER BY md5("id") LIMIT {COLD_IDS}) p""").split(",")


def draw_mix(requests, cold, rng):
    """DRAWS requests: Zipf over the distinct ones (a seeded ranking), COLD_SHARE from the cold ids."""
    ranked = requests[:]
    rng.shuffle(ranked)
    weights = [1 / (rank + 1) ** ZIPF_S for rank in range(len(ranked))]
    hot = rng.choices(range(len(ranked)), weights=weights, k=int(DRAWS * (1 - COLD_SHARE)))
    draws = [ranked[i][0] for i in hot] + [f"/prospects/{rng.choice(cold)}" for _ in range(DRAWS - len(hot))]
    rng.shuffle(draws)
    return draws, collections.Counter(hot), ranked


def pgbench_mix(url, ranked, hot_counts, duration, workdir):
    """The mix's statements through pgbench, each distinct request's weighted by how often the mix
    draws it, the cold tail picking a prospect at random. One script choosing a branch per
    transaction (pgbench takes at most 128 script files)."""
    companies = int(suite.psql(url, 'SELECT count(*) FROM "Company"'))
    branches = [(count, ranked[i][1]) for i, count in hot_counts.items()]
    branches.append((DRAWS - sum(hot_counts.values()), f"""\\set c random(1, {companies})
SELECT {PROSPECTS} FROM company_prospect_view WHERE prospect_id = 'prs_' || lpad(:c::text, 8, '0') || '_1';"""))
    lines = [f"\\set r random(1, {sum(count for count, _ in branches)})"]
    bound = 0
    for n, (count, sql) in enumerate(branches):
        bound += count
        lines += [f"\\{'if' if n == 0 else 'elif'} :r <= {bound}", sql]
    lines.append("\\endif")
    path = os.path.join(workdir, "mix.sql")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    out = suite.sh("pgbench", "-n", "-M", "simple", "-c", str(suite.CLIENTS), "-j", "2", "-T", str(duration), "-f", path, url)
    return float(next(line.split("=")[1].split()[0] for line in out.splitlines() if line.startswith("tps")))


def cache_counts():
    """Hits + coalesced and all responses, summed over the views, from /metrics."""
    return {name: sum(count for (metric, _), count in cache_metrics().items() if metric == name)
            for name in ("hits", "misses", "coalesced")}


def cache_metrics():
    """Every response_cache_*_total counter, by (name, labels), e.g. ("dropped", "view=…,reason=…")."""
    _, _, body = suite.http_get("/metrics")
    counts = collections.Counter()
    for line in body.decode().splitlines():
        if line.startswith("response_cache_") and "_total{" in line:
            name, rest = line[len("response_cache_"):].split("_total{", 1)
            labels = rest.rsplit("}", 1)[0].replace('"', "")
            counts[(name, labels)] += float(line.split()[-1])
    return counts


def rounds_did(before, after):
    """What the rounds did to cached entries during a run, per view: kept, updated, dropped by reason."""
    moved = {}
    for (name, labels), count in after.items():
        if name in ("kept", "dropped") and count - before.get((name, labels), 0):
            fields = dict(pair.split("=", 1) for pair in labels.split(","))
            what = f"{name} {fields.get('how') or fields.get('reason')}"
            moved.setdefault(fields["view"], {})[what] = int(count - before.get((name, labels), 0))
    return moved


def machine_ticks():
    """Ticks the whole machine has spent busy, and in all, so far (/proc/stat's first line)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def busy_share(before, after):
    """The share of the machine's CPU busy between two `machine_ticks()`."""
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


def writes_alone(url, mode, duration, settings, during):
    """The share of the machine's CPU the changing data takes with no reads at all (the writers,
    PostgreSQL running their transactions, the server's rounds): CPU that a read load saturating
    the machine when idle cannot have while the data changes, so 1 − this share bounds the
    writers' run ÷ idle run ratio on this machine whatever the cache does."""
    server = suite.start_server(url, {"VIEW_MAINTENANCE": mode, **(settings or {})})
    try:
        freshness.settle(url)
        stop = threading.Event()
        worker = threading.Thread(target=during, args=(stop,), daemon=True)
        worker.start()
        time.sleep(1)
        before = machine_ticks()
        time.sleep(duration)
        share = busy_share(before, machine_ticks())
        stop.set()
        worker.join()
        return share
    finally:
        server.terminate()
        server.wait()


def run_mix(url, mode, draws, hot, duration, workdir, settings=None, during=None):
    """The mix against a fresh server (with extra `settings`): warm-up, then the measurement (while
    `during` runs, if given). The warm-up asks every distinct hot request a few times, then runs
    the mix: the cache holds what a server up for a while would (the cold ids stay cold), so that
    the runs compare steady states rather than how fast each fills the cache."""
    env = {"VIEW_MAINTENANCE": mode, **(settings or {})}
    server = suite.start_server(url, env)
    try:
        freshness.settle(url)  # the server brings the views up to date; then autovacuum, a checkpoint
        suite.run_wrk([(path, {}) for path in hot], 3, workdir)
        requests = [(path, {}) for path in draws]
        suite.run_wrk(requests, 3, workdir)
        before, metrics_before = cache_counts(), cache_metrics()
        stop = threading.Event()
        worker = threading.Thread(target=during, args=(stop,), daemon=True) if during else None
        if worker:
            worker.start()
            time.sleep(1)
        ticks = machine_ticks()
        result = suite.run_wrk(requests, duration, workdir)
        result["machine_busy"] = busy_share(ticks, machine_ticks())
        stop.set()
        if worker:
            worker.join()
        after = cache_counts()
        served = sum(after.values()) - sum(before.values())
        reused = after["hits"] + after["coalesced"] - before["hits"] - before["coalesced"]
        result["hit_ratio"] = round(reused / served, 3) if served else None
        if during:
            result["rounds_did"] = rounds_did(metrics_before, cache_metrics())
        result["peak_rss_mb"] = round(suite.peak_rss_mb(server.pid), 1)
        _, _, metrics = suite.http_get("/metrics")
        held = [line.split()[1] for line in metrics.decode().splitlines() if line.startswith("response_cache_bytes ")]
        result["cache_bytes_held"] = int(float(held[0])) if held else None
        return result
    finally:
        server.terminate()
        server.wait()


def median_run(runs):
    """The run with the median throughput, with every run's req/s and p99 beside it."""
    chosen = dict(sorted(runs, key=lambda r: r["rps"])[len(runs) // 2])
    chosen["all_rps"] = [round(r["rps"]) for r in runs]
    chosen["all_p99_ms"] = [round(r["p99_ms"], 1) for r in runs]
    if all("writes_alone_busy" in r for r in runs):
        chosen["all_writes_alone_busy"] = [r["writes_alone_busy"] for r in runs]
    return chosen


def refresh_loop(url):
    def loop(stop):
        while not stop.is_set():
            suite.psql(url, "SELECT count(*) FROM refresh_materialized_views('sql')")
    return loop


def writers(url, companies, duration, workdir):
    def write(stop):
        process = freshness.start_writers(url, companies, duration + 2, workdir)
        stop.wait()
        process.terminate()
        process.wait()
    return write


def bench(args, workdir):
    url = freshness.prepare(args.server, args.size)
    prospects = int(suite.psql(url, 'SELECT count(*) FROM "Prospect"'))
    rng = random.Random(42)
    modes = args.modes.split(",")
    first = modes[0]
    freshness.convert(url, first, workdir)
    server = suite.start_server(url, {"VIEW_MAINTENANCE": first})
    try:
        requests = distinct_requests(url, rng)
    finally:
        server.terminate()
        server.wait()
    draws, hot_counts, ranked = draw_mix(requests, cold_ids(url), rng)
    hot = [path for path, _ in ranked]
    print(f"== {args.size}: {prospects} prospects; {len(requests)} distinct requests + {COLD_IDS} cold ids", flush=True)
    result = {"size": args.size, "prospects": prospects, "modes": modes, "distinct": len(requests), "cold_ids": COLD_IDS,
              "duration": args.duration,
              "command": " ".join(["bench/mixed.py"] + sys.argv[1:]),
              "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"}
    runs = {"cached": [], "uncached": []}
    changing = collections.defaultdict(list)
    for _ in range(args.repeat):  # alternating, so that drift affects every variant alike
        for label, settings in (("cached", {}), ("uncached", {"RESPONSE_CACHE_BYTES": "0"})):
            runs[label].append(run_mix(url, first, draws, hot, args.duration, workdir, settings))
            print(f"  {label}: {runs[label][-1]}", flush=True)
        measure_changing(first, url, args, workdir, draws, hot, changing)
    for label, measured in runs.items():
        result[label] = median_run(measured)
    result["pgbench_tps"] = pgbench_mix(url, ranked, hot_counts, args.duration, workdir)
    print(f"  pgbench, the same statements: {result['pgbench_tps']:.0f} TPS", flush=True)
    for mode in modes[1:]:
        freshness.convert(url, mode, workdir)
        for _ in range(args.repeat):
            measure_changing(mode, url, args, workdir, draws, hot, changing)
    result["changing"] = {label: median_run(measured) for label, measured in changing.items()}
    return result


def measure_changing(mode, url, args, workdir, draws, hot, changing):
    """One run of the mix per way the data changes in `mode`, each beside a run of the changes
    alone (no reads): what they leave of the machine for the reads."""
    for label, settings, during in changing_variants(mode, url, args, workdir):
        alone = writes_alone(url, mode, args.duration, settings, during)
        changing[label].append(run_mix(url, mode, draws, hot, args.duration, workdir, settings, during))
        changing[label][-1]["writes_alone_busy"] = alone
        print(f"  cache on, {label}, data changing: {changing[label][-1]}", flush=True)


def changing_variants(mode, url, args, workdir):
    """(label, settings, what changes the data) of the runs while the data changes in `mode`."""
    variants = [(mode, {})]
    if mode == "incremental":  # fewer rounds, fewer generations: the knob that trades age for hits
        variants.append(("incremental, 1 s poll", {"REFRESH_POLL_INTERVAL": "1s"}))
    for label, settings in variants:
        during = (refresh_loop(url) if mode == "refresh"
                  else writers(url, suite.SIZES[args.size], args.duration, workdir))
        yield label, settings, during


def describe(r):
    cached, uncached, tps = r["cached"], r["uncached"], r["pgbench_tps"]
    row = lambda label, m, note="": (f"| {label} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                                     f"{m['hit_ratio'] if m['hit_ratio'] is not None else '–'} | {m['peak_rss_mb']} | "
                                     f"{m['rps'] / tps:.2f} | {m['rps'] / cached['rps']:.2f} | {m['errors']} |{note}")
    writers_note = f"writers change {freshness.WRITER_RATE} companies a second"
    changing = {"refresh": "all views refreshed CONCURRENTLY in a loop",
                "incremental": f"{writers_note}, a round every 250 ms",
                "incremental, 1 s poll": f"{writers_note}, a round every second"}
    lines = ["## Mixed read load: the response cache", "",
             f"Written by `{r['command']}` on {r['date']} (same machine as above), {r['prospects']:,} prospects. "
             f"The mix: {r['distinct']} distinct requests drawn Zipf (s = {ZIPF_S}) plus {COLD_SHARE:.0%} cold "
             f"single-prospect requests over {r['cold_ids']:,} ids; wrk, {suite.CLIENTS} connections, {DRAWS:,} "
             f"pre-drawn requests, {r['duration']} s per run after a warm-up (every distinct request asked "
             "for 3 s, then 3 s of the mix: the cold ids stay cold). pgbench runs the same statements, "
             "weighted as the mix draws them "
             f"({tps:.0f} TPS). The idle runs are in {r['modes'][0]} mode.", "",
             "| run | req/s | p50 ms | p99 ms | hit ratio | peak RSS MB | ÷ pgbench | ÷ cache on, idle | errors |",
             "|---|---|---|---|---|---|---|---|---|",
             row("cache on (64 MiB)", cached), row("cache off", uncached)]
    spread = (f"Median of {len(cached['all_rps'])} alternating runs each: idle with the cache {cached['all_rps']} req/s, "
              f"p99 {cached['all_p99_ms']} ms; without {uncached['all_rps']} req/s, p99 {uncached['all_p99_ms']} ms.")
    for label, m in r["changing"].items():
        lines.append(row(f"cache on, {label} mode: {changing[label]}", m))
    for label, m in r["changing"].items():
        spread += f" {label}, data changing: {m['all_rps']} req/s, p99 {m['all_p99_ms']} ms."
    lines += ["", spread]
    for label, m in r["changing"].items():
        if "all_writes_alone_busy" in m:
            alone = statistics.median(m["all_writes_alone_busy"])
            lines += ["", f"The {label} changes alone, with no reads, kept the machine {alone:.0%} busy "
                      f"(runs {m['all_writes_alone_busy']}); the idle cached mix kept it "
                      f"{cached['machine_busy']:.0%} busy. So the reads under those changes can have at most "
                      f"about {1 - alone:.2f} of the CPU they had idle: on this machine that bounds the "
                      f"÷ idle ratio of the {label} run ({m['rps'] / cached['rps']:.2f}) whatever the cache does."]
    for label, m in r["changing"].items():
        if m.get("rounds_did"):
            did = "; ".join(f"{view}: " + ", ".join(f"{count:,} {what}" for what, count in sorted(counts.items()))
                            for view, counts in sorted(m["rounds_did"].items()))
            lines += ["", f"What the rounds did to cached entries during the {label} run: {did}."]
    lines += [""] + suite.raw_figures(r)
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", help="100k, 1m or 10m")
    parser.add_argument("--modes", default="refresh,incremental")
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="runs with and without the cache (median reported)")
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=suite.ROOT)
    with tempfile.TemporaryDirectory() as workdir:
        result = bench(args, workdir)
    suite.write_section("mixed", describe(result))
    print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
