#!/usr/bin/env python3
"""What the admin console reads, at scale: `python3 bench/admin_scale.py --database URL [--log-rows N]`.

The console polls `/admin/views` and `/admin/instance` every 5 s and the timeline every 30 s, and
pages the refresh and audit logs. This measures each of those requests on a database of your size
(seeded and refreshed, e.g. by `prospect-api seed --companies 100000`) after adding N synthetic rows
to its refresh log (a day of applies every ~2.6 s per view, as in incremental mode) and N to its
audit log (a month of exports by 50 keys). It WRITES those rows into the database's logs (the audit
log is append-only): point it at a scratch copy, never at production. Prints the median and p95 of
`--requests` sequential requests per endpoint and writes the `admin` section of bench/RESULTS.md.
"""

import argparse
import datetime
import os
import platform
import secrets
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (psql, RESULTS.md sections)

ROOT = run.ROOT


def add_synthetic_rows(url, rows):
    per_view = rows // 3
    run.psql(url, f"""
        INSERT INTO materialized_view_log (view_name, trigger, status, method, started_at, finished_at, row_count,
                                           companies_changed, rows_changed, error_message)
        SELECT v, 'incremental', CASE WHEN i % 997 = 0 THEN 'error' ELSE 'ok' END,
               CASE WHEN i % 997 = 0 THEN NULL ELSE 'apply' END,
               now() - interval '24 hours' + i * (interval '24 hours' / {per_view}),
               now() - interval '24 hours' + i * (interval '24 hours' / {per_view}) + interval '180 milliseconds',
               100, 3, 40, CASE WHEN i % 997 = 0 THEN 'synthetic failure' END
        FROM generate_series(1, {per_view}) AS i,
             unnest(ARRAY['company_prospect_view', 'company_summary_view', 'prospect_search_view']) AS v""")
    run.psql(url, f"""
        INSERT INTO audit_log (at, credential, role, action, endpoint, rows, bytes, outcome)
        SELECT now() - interval '30 days' + i * (interval '30 days' / {rows}), 'key:k' || (i % 50), 'analyst',
               'export', '/prospects', 500, 100000, 'completed'
        FROM generate_series(1, {rows}) AS i""")
    run.psql(url, "ANALYZE materialized_view_log; ANALYZE audit_log")


def timed(path, token, requests):
    samples = []
    for _ in range(requests):
        request = urllib.request.Request(run.API + path, headers={"Authorization": f"Bearer {token}"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
        samples.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"{path}: {status}")
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True, help="a scratch database, seeded and refreshed")
    parser.add_argument("--log-rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--binary", default=run.BINARY)
    args = parser.parse_args()
    prospects = int(run.psql(args.database, 'SELECT count(*) FROM "Prospect"'))
    unpopulated = run.psql(args.database, "SELECT string_agg(name, ', ') FROM read_models WHERE NOT populated")
    add_synthetic_rows(args.database, args.log_rows)
    log_rows = int(run.psql(args.database, "SELECT count(*) FROM materialized_view_log"))
    audit_rows = int(run.psql(args.database, "SELECT count(*) FROM audit_log"))
    middle_log = run.psql(args.database, "SELECT id FROM materialized_view_log ORDER BY id OFFSET "
                                         "(SELECT count(*) / 2 FROM materialized_view_log) LIMIT 1")
    day = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=15)).date().isoformat()
    token = secrets.token_hex(24)
    # Live (/healthz) is enough: the console must work with a view not yet populated.
    server = run.start_server(args.database, {"ADMIN_TOKEN": token}, binary=args.binary, ready="/healthz")
    cases = [
        ("views (every 5 s)", "/admin/views"),
        ("instance (every 5 s)", "/admin/instance"),
        ("timeline, 24 h (every 30 s)", "/admin/refresh/timeline?hours=24"),
        ("timeline, 7 days", "/admin/refresh/timeline?hours=168"),
        ("refresh log, first page", "/admin/refresh/history?limit=20"),
        ("refresh log, a page in the middle", f"/admin/refresh/history?limit=20&before={middle_log}"),
        ("audit log, first page", "/admin/audit?limit=20"),
        ("audit log, one day", f"/admin/audit?limit=20&day={day}"),
        ("audit log, one key and day", f"/admin/audit?limit=20&day={day}&credential=key:k7"),
        ("API keys", "/admin/keys"),
    ]
    try:
        results = [(name, path, *timed(path, token, args.requests)) for name, path in cases]
    finally:
        server.terminate()
        server.wait()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Admin console reads at scale",
        "",
        f"Written by `python3 bench/admin_scale.py --database … --log-rows {args.log_rows} --requests {args.requests}` "
        f"on {now}: {prospects:,} prospects, {log_rows:,} refresh-log rows, {audit_rows:,} audit rows; "
        f"{platform.machine()}, {os.cpu_count()} cores, binary {os.path.relpath(args.binary, ROOT)}, "
        "sequential requests over HTTP."
        + (f" Not populated (still served by the console): {unpopulated}." if unpopulated else ""),
        "",
        "| request | path | median ms | p95 ms |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | `{path}` | {median:.1f} | {p95:.1f} |" for name, path, median, p95 in results]
    text = "\n".join(lines) + "\n"
    print(text)
    run.write_section("admin", text)


if __name__ == "__main__":
    main()
