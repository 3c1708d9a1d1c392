#!/usr/bin/env python3
"""Break the database under load and watch the API: restart PostgreSQL, then terminate every backend.

RESTARTS THE LOCAL POSTGRESQL CLUSTER (pg_ctlcluster): run it on a development machine, never while
other work uses that server (the test suite included).

  1. A fresh database with a little data; `prospect-api serve` with notifications on (so the LISTEN
     connection must come back too) and no schedule (so only a catch-up can find a missed change).
  2. Load: 8 threads reading /prospects, /companies, /search and /readyz throughout.
  3. A write made in a session that does not notify (prospect_api.notify = off) just before
     PostgreSQL stops: only the catch-up after the listener reconnects can make it visible.
  4. PostgreSQL stopped for --down seconds (fast shutdown), then started.
  5. Every backend of the database terminated with pg_terminate_backend, twice.
  6. Checks: the server process never exits; every response is a 200 or a 503 problem with
     Retry-After; no request outlasts REQUEST_TIMEOUT; /readyz says 503 while the database is away;
     /prospects is served again within 5 s of PostgreSQL accepting connections; the write from (3) is
     served after a 'catchup' refresh; every view's last refresh-log row counts exactly the rows the
     view holds.

    python3 reliability/db_faults.py [--down 8] [--binary target/release/prospect-api]
"""

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUEST_TIMEOUT = 10.0
READS = [
    "/prospects?limit=5",
    "/companies?country=Germany&sort=-prospect_count",
    "/search?q=engineer",
    "/readyz",
]


def cluster():
    version = sorted(os.listdir("/etc/postgresql"))[0]
    return version


def pg(action):
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster(), "main", action, *(
        ["-m", "fast"] if action == "stop" else [])], check=True)


def pg_ready():
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode == 0


def psql(url, sql):
    return subprocess.run(["psql", url, "-Atqc", sql], check=True, capture_output=True, text=True).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=REQUEST_TIMEOUT + 5):
    """(status, headers, body) of a GET; never raises for HTTP errors."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class Load:
    """Threads reading the API, recording (time, path, status, seconds, problem) per request."""

    def __init__(self, base, threads=8):
        self.base = base
        self.records = []
        self.violations = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, i):
        n = i
        while not self.stop.is_set():
            path = READS[n % len(READS)]
            n += 1
            started = time.time()
            try:
                status, headers, body = get(self.base + path)
            except Exception as e:  # a reset or a hang: both are violations
                with self.lock:
                    self.violations.append(f"{path}: {type(e).__name__}: {e}")
                time.sleep(0.05)
                continue
            elapsed = time.time() - started
            problem = None
            if status != 200:
                ctype = headers.get("content-type", "")
                if status != 503 or "retry-after" not in headers or ctype != "application/problem+json":
                    with self.lock:
                        self.violations.append(f"{path}: {status} {ctype} {headers.get('retry-after')} {body[:200]!r}")
                else:
                    problem = json.loads(body).get("type")
            if elapsed > REQUEST_TIMEOUT + 1:
                with self.lock:
                    self.violations.append(f"{path}: took {elapsed:.1f} s")
            with self.lock:
                self.records.append((started, path, status, elapsed, problem))

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def between(self, start, end):
        return [r for r in self.records if start <= r[0] < end]


def summarize(records):
    statuses = collections.Counter(r[2] for r in records)
    problems = collections.Counter(r[4] for r in records if r[4])
    slowest = max((r[3] for r in records), default=0)
    return f"{len(records)} requests {dict(statuses)}, problems {dict(problems)}, slowest {slowest:.2f} s"


def timeline(records, start, end, step=1.0):
    """Statuses per `step` seconds from `start`: how the outage looked to clients."""
    buckets = collections.defaultdict(collections.Counter)
    for r in records:
        if start <= r[0] < end:
            buckets[int((r[0] - start) // step)][r[2]] += 1
    return "  ".join(f"+{k * step:.0f}s:{dict(v)}" for k, v in sorted(buckets.items()))


def first_time(base, path, status, since, limit):
    """Polls until `path` answers `status`; returns the seconds since `since`, or None."""
    while time.time() - since < limit:
        try:
            if get(base + path, timeout=5)[0] == status:
                return time.time() - since
        except Exception:
            pass
        time.sleep(0.05)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--down", type=float, default=8.0, help="seconds PostgreSQL stays stopped")
    parser.add_argument("--binary", default=None)
    args = parser.parse_args()
    binary = args.binary or next(
        p for p in (os.path.join(ROOT, "target/release/prospect-api"), os.path.join(ROOT, "target/debug/prospect-api"))
        if os.path.exists(p))
    name = f"prospect_api_faults_{os.getpid()}"
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    env = dict(os.environ, DATABASE_URL=url)
    subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([binary, "seed", "--companies", "300", "--replace", "--refresh"], env=env, check=True,
                   capture_output=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="faults-server-", suffix=".log", delete=False)
    server = subprocess.Popen([binary, "serve"], env=dict(
        env, BIND_ADDR=f"127.0.0.1:{port}", REFRESH_NOTIFY="true", REFRESH_INTERVAL="0",
        REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT:.0f}s", LOG_FORMAT="json"), stdout=log, stderr=subprocess.STDOUT)
    ok = True
    try:
        if first_time(base, "/readyz", 200, time.time(), 60) is None:
            raise SystemExit("the server did not become ready")
        load = Load(base)
        load.start()
        time.sleep(3)
        baseline_end = time.time()

        # (3) a change nobody is told about, then (4) the outage.
        psql(url, "SET prospect_api.notify = 'off'; "
                  "INSERT INTO \"Prospect\" (\"id\", \"companyId\", \"firstName\") "
                  "SELECT 'p_during_outage', id, 'Missed' FROM \"Company\" ORDER BY id LIMIT 1")
        down_at = time.time()
        pg("stop")
        stopped_at = time.time()
        time.sleep(args.down / 2)
        readyz_down = get(base + "/readyz")[0]
        time.sleep(args.down / 2)
        # pg_ctlcluster returns a while after the server accepts connections: time the return from
        # the first moment pg_isready says yes, polled while the start command runs.
        starting = threading.Thread(target=pg, args=("start",))
        starting.start()
        while not pg_ready():
            time.sleep(0.05)
        up_at = time.time()
        starting.join()
        started_returned = time.time()
        back = first_time(base, "/prospects?limit=1", 200, up_at, 30)
        ready_back = first_time(base, "/readyz", 200, up_at, 30)
        caught_up = first_time(base, "/prospects/p_during_outage", 200, up_at, 60)
        catchup_rows = psql(url, "SELECT count(*) FROM materialized_view_log "
                                 "WHERE trigger = 'catchup' AND status = 'ok'")
        time.sleep(2)

        # (5) every backend terminated, twice.
        kill_at = time.time()
        for _ in range(2):
            psql("postgres://postgres@127.0.0.1:5432/postgres",
                 f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                 f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            time.sleep(1)
        kill_back = first_time(base, "/prospects?limit=1", 200, time.time(), 30)
        time.sleep(2)
        load.finish()
        end = time.time()

        # The refresh log tells the truth: each view's last successful refresh counted what it holds.
        time.sleep(1)
        honest = []
        for view in ["company_prospect_view", "company_summary_view", "prospect_search_view"]:
            logged = psql(url, f"SELECT row_count FROM materialized_view_log WHERE view_name = '{view}' "
                               f"AND status = 'ok' ORDER BY id DESC LIMIT 1")
            actual = psql(url, f"SELECT count(*) FROM {view}")
            honest.append((view, logged, actual))

        alive = server.poll() is None
        print(f"baseline          : {summarize(load.between(0, baseline_end))}")
        print(f"postgres down {args.down:.0f} s : {summarize(load.between(down_at, up_at))}")
        print(f"  stopping took {stopped_at - down_at:.2f} s; by second from the stop command: "
              f"{timeline(load.records, down_at, up_at + 2)}")
        print(f"/readyz while down: {readyz_down}")
        print(f"after restart     : {summarize(load.between(up_at, kill_at))}")
        print(f"  /prospects 200 again {back:.2f} s after PostgreSQL accepted connections" if back is not None
              else "  /prospects never came back")
        # The load's own requests say it sooner than a poll begun after the start command returned.
        resumed = min((r[0] + r[3] for r in load.records
                       if r[0] + r[3] >= up_at and r[1].startswith("/prospects") and r[2] == 200), default=None)
        print(f"  the load's first /prospects 200 {resumed - up_at:.2f} s after PostgreSQL accepted connections "
              f"(pg_ctlcluster start returned {started_returned - up_at:.2f} s after)" if resumed is not None
              else "  the load saw no /prospects 200")
        print(f"  /readyz 200 again    {ready_back:.2f} s after" if ready_back is not None else "  /readyz never 200")
        print(f"  the write made before the outage served {caught_up:.2f} s after ({catchup_rows} 'catchup' refreshes logged)"
              if caught_up is not None else "  the write made before the outage was never served")
        print(f"terminate backends: {summarize(load.between(kill_at, end))}")
        print(f"  /prospects 200 again {kill_back:.2f} s after the last termination" if kill_back is not None
              else "  never came back")
        print(f"refresh log vs views (view, logged rows, actual rows): {honest}")
        print(f"server process alive: {alive}; protocol violations: {len(load.violations)}")
        for v in load.violations[:20]:
            print("  ", v)
        ok = (alive and not load.violations and readyz_down == 503 and back is not None and back <= 5
              and ready_back is not None and caught_up is not None and int(catchup_rows) > 0
              and kill_back is not None and kill_back <= 5 and all(l == a for _, l, a in honest))
    finally:
        if not pg_ready():
            pg("start")
        server.terminate()
        server.wait(timeout=30)
        subprocess.run(["dropdb", "--if-exists", "--force", "-h", "127.0.0.1", "-U", "postgres", name],
                       capture_output=True)
    print(f"server log: {log.name}")
    print("db_faults: PASS" if ok else "db_faults: FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
