#!/usr/bin/env python3
"""The README's pg_cron recipe, run as written: `python3 reliability/pg_cron_check.py [--binary PATH]`.

pg_cron must be preloaded by the server, and the machine's main PostgreSQL is not ours to reconfigure,
so this makes a throwaway cluster (reliability/pg_cluster.py: PostgreSQL's own binaries as the `postgres`
OS user on a free port in a temporary directory) with `shared_preload_libraries = 'pg_cron'`. It migrates
and seeds a `prospects` database there with the given binary, schedules the README's job with
`cron.schedule_in_database` for every minute (pg_cron 1.4's shortest period), waits for a run, and
checks that pg_cron reports it succeeded and that the refresh log has the three views refreshed by it.
The cluster is stopped and removed afterwards, whatever happens.

Installs Debian's postgresql-15-cron when it is missing. Standard library only; run as root.
"""

import argparse
import os
import subprocess
import sys
import time

from pg_cluster import Cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB = "prospect-api nightly refresh"


def ensure_pg_cron():
    if not os.path.exists("/usr/lib/postgresql/15/lib/pg_cron.so"):
        print("installing Debian's postgresql-15-cron", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql-15-cron"], check=True, capture_output=True)


def run_recipe(cluster, binary):
    """Migrates, seeds, schedules the job, waits for its run; what was checked and whether it held."""
    url = cluster.url("prospects")
    env = dict(os.environ, DATABASE_URL=url, RUST_LOG="warn")
    subprocess.run([binary, "seed", "--companies", "50", "--no-refresh"], env=env, check=True,
                   capture_output=True)
    subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
    # The README's statements, in pg_cron's database.
    cluster.psql("postgres", "CREATE EXTENSION IF NOT EXISTS pg_cron")
    job = cluster.psql("postgres", f"""SELECT cron.schedule_in_database('{JOB}', '* * * * *',
               'SELECT count(*) FROM refresh_materialized_views()', 'prospects')""")
    print(f"scheduled job {job}; waiting for its first run (pg_cron runs at most once a minute)", flush=True)
    deadline = time.monotonic() + 130
    status = ""
    while time.monotonic() < deadline:
        status = cluster.psql("postgres", f"""SELECT coalesce(string_agg(status, ','), '')
                      FROM cron.job_run_details WHERE jobid = {job} AND status IN ('succeeded', 'failed')""")
        if status:
            break
        time.sleep(2)
    refreshed = cluster.psql("prospects", """SELECT count(DISTINCT view_name) FROM materialized_view_log
                     WHERE trigger = 'sql' AND status = 'ok'""")
    populated = cluster.psql("prospects", "SELECT bool_and(populated) FROM read_models")
    cluster.psql("postgres", f"SELECT cron.unschedule('{JOB}')")
    checks = {
        "pg_cron ran the job and it succeeded": status.startswith("succeeded"),
        "the refresh log has all three views refreshed from SQL": refreshed == "3",
        "the read models are populated": populated == "t",
        "cron.unschedule removed it": cluster.psql("postgres", "SELECT count(*) FROM cron.job") == "0",
    }
    return checks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "debug", "prospect-api"))
    args = parser.parse_args()
    ensure_pg_cron()
    with Cluster(replica=False, conf=["shared_preload_libraries = 'pg_cron'", "cron.database_name = 'postgres'"]) \
            as cluster:
        checks = run_recipe(cluster, args.binary)
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
