#!/usr/bin/env python3
"""CSV exports at scale: `bench/csv_export.py [--size 1m]`.

Against the benchmark database bench/run.py seeded, a release server (CSV_MAX_ROWS raised to a
million, response cache off) exports `/prospects?…&format=csv` for a few filters, and the same rows
are read by paging the JSON list with its cursor (500 a page), side by side: seconds, rows/s, bytes,
and the server's resident memory before and at its peak (VmHWM), which a streamed export must not
grow with the row count. Writes the `csv` section of bench/RESULTS.md.

Standard library only.
"""

import argparse
import datetime
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's data, server and request helpers)

EXPORTS = [
    "industry=Software&job_title_level=VP",
    "industry=Software",
    "job_title_level=Entry",
]


def rss_mb(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def export(query):
    started = time.perf_counter()
    size = 0
    lines = 0
    with urllib.request.urlopen(f"{run.API}/prospects?{query}&format=csv", timeout=600) as response:
        previous = b""
        while chunk := response.read(1 << 16):
            size += len(chunk)
            lines += (previous[-1:] + chunk).count(b"\r\n")  # a CRLF may straddle two reads
            previous = chunk
    return time.perf_counter() - started, lines - 1, size


def page_through(query):
    started = time.perf_counter()
    rows = 0
    cursor = ""
    while True:
        with urllib.request.urlopen(f"{run.API}/prospects?{query}&limit=500{cursor}", timeout=600) as response:
            body = json.loads(response.read())
        rows += len(body["data"])
        if not body["next_cursor"]:
            return time.perf_counter() - started, rows
        cursor = "&cursor=" + body["next_cursor"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", choices=sorted(run.SIZES))
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    run.subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=run.ROOT)
    url = run.prepare_database(args.server, args.size)
    run.refresh_durations(url)
    server = run.start_server(url, {**run.NO_RESPONSE_CACHE, "CSV_MAX_ROWS": "1000000"})
    lines = ["| filter | rows | CSV: s / rows per s / MB | JSON pages of 500: s / rows per s | CSV ÷ JSON rows/s "
             "| server RSS before → peak MB |", "|---|---|---|---|---|---|"]
    try:
        export(EXPORTS[0])  # warm-up
        # Every export first, so that the high-water mark after each is the exports' own.
        exports = []
        for query in EXPORTS:
            before = rss_mb(server.pid, "VmRSS")
            seconds, rows, size = export(query)
            exports.append((query, before, seconds, rows, size, rss_mb(server.pid, "VmHWM")))
        for query, before, seconds, rows, size, peak in exports:
            json_seconds, json_rows = page_through(query)
            assert json_rows == rows, (query, rows, json_rows)
            line = (f"| `{query}` | {rows:,} | {seconds:.2f} / {rows / seconds:,.0f} / {size / 1e6:.0f} | "
                    f"{json_seconds:.2f} / {json_rows / json_seconds:,.0f} | "
                    f"{(rows / seconds) / (json_rows / json_seconds):.2f} | {before:.0f} → {peak:.0f} |")
            print(line, flush=True)
            lines.append(line)
    finally:
        server.terminate()
        server.wait()
    prospects = int(run.psql(url, 'SELECT count(*) FROM "Prospect"'))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    table = "\n".join(lines)
    run.write_section("csv", f"""## CSV exports: `GET /prospects?…&format=csv`

Written by `bench/csv_export.py --size {args.size}` on {now} UTC, {prospects:,} prospects, one client, the
response cache off, CSV_MAX_ROWS=1000000; the JSON column reads the same rows through the cursor.

{table}
""")


if __name__ == "__main__":
    main()
