#!/usr/bin/env python3
"""The README's pg_cron recipe, run as written: `python3 reliability/pg_cron_check.py [--binary PATH]`.

pg_cron must be preloaded by the server, and the machine's main PostgreSQL is not ours to reconfigure,
so this makes a throwaway cluster with PostgreSQL's own binaries (initdb, pg_ctl) as the `postgres` OS
user on a free port in a temporary directory, with `shared_preload_libraries = 'pg_cron'`. It migrates
and seeds a `prospects` database there with the given binary, schedules the README's job with
`cron.schedule_in_database` for every minute (pg_cron 1.4's shortest period), waits for a run, and
checks that pg_cron reports it succeeded and that the refresh log has the three views refreshed by it.
The cluster is stopped and removed afterwards, whatever happens.

Installs Debian's postgresql-15-cron when it is missing. Standard library only; run as root.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_BIN = "/usr/lib/postgresql/15/bin"
JOB = "prospect-api nightly refresh"


def as_postgres(*command, **kwargs):
    return subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True,
                          text=True, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(port, database, sql):
    return subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-Atq", "-h", "127.0.0.1", "-p", str(port),
                           "-U", "postgres", "-d", database, "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def ensure_pg_cron():
    if not os.path.exists("/usr/lib/postgresql/15/lib/pg_cron.so"):
        print("installing Debian's postgresql-15-cron", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql-15-cron"], check=True, capture_output=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "debug", "prospect-api"))
    args = parser.parse_args()
    ensure_pg_cron()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="pg-cron-check-")
    shutil.chown(workdir, "postgres", "postgres")
    data = os.path.join(workdir, "data")
    as_postgres(f"{PG_BIN}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    with open(os.path.join(data, "postgresql.conf"), "a") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{workdir}'\n"
                   "shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n")
    started = False
    try:
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "-l", os.path.join(workdir, "log"), "-w", "start")
        started = True
        url = f"postgres://postgres@127.0.0.1:{port}/prospects"
        env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn")
        subprocess.run([args.binary, "seed", "--companies", "50", "--no-refresh"], env=env, check=True,
                       capture_output=True)
        subprocess.run([args.binary, "migrate"], env=env, check=True, capture_output=True)
        # The README's statements, in pg_cron's database.
        psql(port, "postgres", "CREATE EXTENSION IF NOT EXISTS pg_cron")
        job = psql(port, "postgres", f"""SELECT cron.schedule_in_database('{JOB}', '* * * * *',
                   'SELECT count(*) FROM refresh_materialized_views()', 'prospects')""")
        print(f"scheduled job {job}; waiting for its first run (pg_cron runs at most once a minute)", flush=True)
        deadline = time.monotonic() + 130
        status = ""
        while time.monotonic() < deadline:
            status = psql(port, "postgres", f"""SELECT coalesce(string_agg(status, ','), '')
                          FROM cron.job_run_details WHERE jobid = {job} AND status IN ('succeeded', 'failed')""")
            if status:
                break
            time.sleep(2)
        refreshed = psql(port, "prospects", """SELECT count(DISTINCT view_name) FROM materialized_view_log
                         WHERE trigger = 'sql' AND status = 'ok'""")
        populated = psql(port, "prospects", "SELECT bool_and(populated) FROM read_models")
        psql(port, "postgres", f"SELECT cron.unschedule('{JOB}')")
        checks = {
            "pg_cron ran the job and it succeeded": status.startswith("succeeded"),
            "the refresh log has all three views refreshed from SQL": refreshed == "3",
            "the read models are populated": populated == "t",
            "cron.unschedule removed it": psql(port, "postgres", "SELECT count(*) FROM cron.job") == "0",
        }
    finally:
        if started:
            as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(workdir, ignore_errors=True)
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
