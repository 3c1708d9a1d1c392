#!/usr/bin/env python3
"""Scale-out on a real streaming replica: `bench/scale_out.py [--size 100k] [--duration 15] [--repeat 3] [--samples 40]`
rewrites the `scale_out` section of bench/RESULTS.md.

It makes a throwaway primary and a physical replica (reliability/pg_cluster.py), seeds the primary, and
runs two `serve` instances as behind a load balancer: A on the primary alone, B reading the replica
(READ_DATABASE_URL), both in incremental mode and both maintaining the read models (PostgreSQL locks
pick one). While pgbench writers change WRITER_RATE companies a second on the primary throughout:

  - wrk on A alone, on B alone, then on both at once, `--repeat` rounds: requests per second, p99, and
    what the second instance adds (both ÷ A alone, median of the rounds), with every non-2xx/3xx answer
    counted (there must be none);
  - every 200 ms, each instance's X-Data-Refreshed-At and X-Data-Age checked against the primary's
    refresh log and clock: the snapshot must be one the primary logged, and the age (whole seconds)
    must lie between that snapshot's age on the primary's clock just before the request (rounded
    down) and just after it;
  - commit-to-visible (bench/commit_to_visible.py: a prospect inserted on the primary, polled by id)
    through A and through B: median and p99.

Everything runs on this one machine, so the instances, both PostgreSQL servers, wrk and the writers
share its cores: the throughput the second instance adds is bounded by that, not by the design.
Needs psql, pgbench, wrk and a release build. Standard library only; run as root.
"""
import argparse
import datetime
import json
import math
import statistics
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reliability"))
import freshness  # noqa: E402  (the writers)
import run as suite  # noqa: E402  (wrk's script, seeding sizes, results file)
from pg_cluster import Cluster, free_port  # noqa: E402

CLIENTS_PER_INSTANCE = 8


def get(base, path):
    try:
        with urllib.request.urlopen(base + path, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


class Instance:
    def __init__(self, name, primary_url, replica_url=None):
        self.name = name
        self.base = f"http://127.0.0.1:{free_port()}"
        env = dict(os.environ, DATABASE_URL=primary_url, BIND_ADDR=self.base[len("http://"):], RUST_LOG="warn",
                   REFRESH_INTERVAL="0", VIEW_MAINTENANCE="incremental")
        if replica_url:
            env["READ_DATABASE_URL"] = replica_url
        self.process = subprocess.Popen([suite.BINARY, "serve"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.expected = "replica" if replica_url else "primary"

    def wait_ready(self):
        for _ in range(1200):
            try:
                status, _, body = get(self.base, "/readyz")
                if status == 200 and json.loads(body)["reads_from"] == self.expected:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"instance {self.name} did not become ready reading from the {self.expected}")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def wrk(instance, requests, duration, workdir):
    """suite.run_wrk against one instance (its own request file and script)."""
    listing = os.path.join(workdir, f"requests-{instance.name}.txt")
    with open(listing, "w") as f:
        f.writelines(f"{path}\t\n" for path in requests)
    script = os.path.join(workdir, f"requests-{instance.name}.lua")
    with open(script, "w") as f:
        f.write(suite.WRK_SCRIPT)
    suite.ensure_wrk()
    out = suite.sh("wrk", "-t1", f"-c{CLIENTS_PER_INSTANCE}", f"-d{duration}s", "-s", script, instance.base,
                   env=dict(os.environ, WRK_REQUESTS=listing))
    count, micros, p50, p99, _, socket_errors, status_errors = next(
        line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
    return {"rps": int(count) / (int(micros) / 1e6), "p50_ms": float(p50) / 1000, "p99_ms": float(p99) / 1000,
            "errors": int(socket_errors) + int(status_errors)}


def wrk_together(instances, requests, duration, workdir):
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i.name, wrk(i, requests, duration, workdir)))
               for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class AgeChecker(threading.Thread):
    """Samples each instance's freshness headers with the primary's clock beside them."""

    def __init__(self, instances, primary_url):
        super().__init__(daemon=True)
        self.instances, self.primary_url = instances, primary_url
        self.samples = {i.name: [] for i in instances}
        self.running = True

    def run(self):
        while self.running:
            for instance in self.instances:
                before = self.primary_clock()
                status, headers, _ = get(instance.base, "/prospects?limit=1&fields=prospect_id")
                after = self.primary_clock()
                if status == 200:
                    self.samples[instance.name].append(
                        (headers["x-data-refreshed-at"], int(headers["x-data-age"]), before, after))
            time.sleep(0.2)

    def primary_clock(self):
        return parse(suite.psql(self.primary_url, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                                  "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"))

    def verdict(self, logged):
        """Per instance: samples, how many name a snapshot the primary never logged, how many have an age
        outside [its age on the primary's clock before the request, rounded down; after it], and the
        largest age seen. (The snapshot time in the header is cut to milliseconds: 1 ms of slack.)"""
        out = {}
        for name, samples in self.samples.items():
            unknown = sum(1 for at, _, _, _ in samples if at not in logged)
            off = 0
            for at, age, before, after in samples:
                low = math.floor((before - parse(at)).total_seconds() - 0.001)
                high = (after - parse(at)).total_seconds() + 0.001
                off += not low <= age <= high
            out[name] = {"samples": len(samples), "unlogged_snapshots": unknown, "ages_off": off,
                         "max_age_s": max((age for _, age, _, _ in samples), default=None)}
        return out


def parse(timestamp):
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def logged_snapshots(primary_url):
    rows = suite.psql(primary_url, """SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
                      FROM materialized_view_log WHERE status = 'ok' AND view_name = 'company_prospect_view'""")
    return set(rows.splitlines())


def commit_to_visible(instance, primary_url, samples):
    out = suite.sh(sys.executable, os.path.join(suite.ROOT, "bench", "commit_to_visible.py"), "--api", instance.base,
                   "--database-url", primary_url, "--samples", str(samples), "--pause", "0.3", "--json")
    return json.loads(out.strip().splitlines()[-1])


def measure(cluster, args, workdir):
    primary_url, replica_url = cluster.url("prospects"), cluster.url("prospects", "replica")
    env = dict(os.environ, DATABASE_URL=primary_url, RUST_LOG="warn")
    print(f"seeding {args.size} on the throwaway primary ...", flush=True)
    suite.sh(suite.BINARY, "seed", "--companies", str(suite.SIZES[args.size]), env=env)
    a = Instance("A", primary_url)
    a.wait_ready()  # A converts the read models to incremental tables before B starts
    cluster.wait_for_replay(timeout=600)
    b = Instance("B", primary_url, replica_url)
    b.wait_ready()
    instances = [a, b]
    requests = ([f"/prospects?industry={suite.quote(i)}" for i in suite.INDUSTRIES] +
                [f"/companies?country={suite.quote(c)}&sort=-prospect_count" for c in suite.COUNTRIES] +
                [f"/search?q={suite.quote(t)}" for t in suite.TERMS])
    try:
        writers = freshness.start_writers(primary_url, suite.SIZES[args.size], 100_000, workdir)
        checker = AgeChecker(instances, primary_url)
        checker.start()
        time.sleep(2)
        rounds = []
        for round_number in range(args.repeat):
            print(f"wrk round {round_number + 1}: A alone, B alone, both at once ...", flush=True)
            alone = {i.name: wrk(i, requests, args.duration, workdir) for i in instances}
            rounds.append({"alone": alone, "together": wrk_together(instances, requests, args.duration, workdir)})
        print("commit-to-visible through A, then B ...", flush=True)
        visible = {i.name: commit_to_visible(i, primary_url, args.samples) for i in instances}
        checker.running = False
        checker.join()
        writers.terminate()
        writers.wait()
        _, _, metrics = get(b.base, "/metrics")
        lag = next((float(line.split()[1]) for line in metrics.decode().splitlines()
                    if line.startswith("replica_lag_seconds ")), None)
        fallbacks = next(float(line.split()[1]) for line in metrics.decode().splitlines()
                         if line.startswith("replica_fallbacks_total "))
        return {"rounds": rounds, "visible": visible,
                "ages": checker.verdict(logged_snapshots(primary_url)), "replica_lag_s": lag,
                "fallbacks": fallbacks}
    finally:
        for instance in instances:
            instance.stop()


def describe(results, args):
    rounds, visible, ages = results["rounds"], results["visible"], results["ages"]
    runs = [run for r in rounds for run in (*r["alone"].values(), *r["together"].values())]
    errors = sum(run["errors"] for run in runs)
    ratios = []
    lines = [
        "## Scale-out on a streaming replica",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, size {args.size}, "
        f"`python3 bench/scale_out.py --size {args.size} --duration {args.duration} --repeat {args.repeat} "
        f"--samples {args.samples}`. A throwaway primary and physical replica (reliability/pg_cluster.py) on this "
        "2-core machine; instance A reads the primary, B the replica (READ_DATABASE_URL); incremental mode; pgbench "
        f"writers change {freshness.WRITER_RATE} companies a second on the primary throughout; wrk with "
        f"{CLIENTS_PER_INSTANCE} connections per instance over {len(suite.INDUSTRIES) + len(suite.COUNTRIES) + len(suite.TERMS)} "
        f"list and search requests (response cache on), {args.duration} s per run, rounds one after another.",
        "",
        "| round | A alone req/s (p99 ms) | B alone req/s (p99 ms) | both at once: A + B req/s (p99 ms) | both ÷ A alone |",
        "|---|---:|---:|---:|---:|",
    ]
    for number, r in enumerate(rounds, 1):
        a, b, ta, tb = r["alone"]["A"], r["alone"]["B"], r["together"]["A"], r["together"]["B"]
        ratios.append((ta["rps"] + tb["rps"]) / a["rps"])
        lines.append(f"| {number} | {a['rps']:,.0f} ({a['p99_ms']:.1f}) | {b['rps']:,.0f} ({b['p99_ms']:.1f}) | "
                     f"{ta['rps']:,.0f} ({ta['p99_ms']:.1f}) + {tb['rps']:,.0f} ({tb['p99_ms']:.1f}) = "
                     f"{ta['rps'] + tb['rps']:,.0f} | {ratios[-1]:.2f} |")
    lag = results["replica_lag_s"]
    lines += [
        "",
        f"What the second instance adds, median over the rounds: **{statistics.median(ratios):.2f}** of A alone.",
        "",
        f"Answers other than 2xx/3xx (wrk, all runs): **{errors}**. Replica lag at the end "
        f"{'unknown' if lag is None else f'{lag:.2f} s'}; reads left the replica {results['fallbacks']:.0f} times.",
        "",
        "| instance | freshness samples | snapshot not in the primary's log | age outside the primary's clock "
        "around the request | largest X-Data-Age | commit-to-visible median s | p99 s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in [("A", "A (primary)"), ("B", "B (replica)")]:
        lines.append(f"| {label} | {ages[name]['samples']} | {ages[name]['unlogged_snapshots']} | {ages[name]['ages_off']} | "
                     f"{ages[name]['max_age_s']} | {visible[name]['median_s']} | "
                     f"{visible[name]['p99_s']} |")
    lines += ["", f"Commit-to-visible: {visible['A']['samples']} inserts per instance, each polled by id until served."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="100k", choices=sorted(suite.SIZES))
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the three wrk runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, Cluster(replica=True) as cluster:
        results = measure(cluster, args, workdir)
    text = describe(results, args)
    print(text)
    suite.write_section("scale_out", text)
    failures = []
    runs = [run for r in results["rounds"] for run in (*r["alone"].values(), *r["together"].values())]
    if any(run["errors"] for run in runs):
        failures.append("some answers were errors")
    for name, verdict in results["ages"].items():
        if verdict["unlogged_snapshots"] or verdict["ages_off"] or not verdict["samples"]:
            failures.append(f"instance {name}'s ages are not consistent with the primary's log")
    if failures:
        raise SystemExit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
