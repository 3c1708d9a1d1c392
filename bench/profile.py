#!/usr/bin/env python3
"""Where a request's CPU goes: `bench/profile.py [--size 100k] [--case a] [--seconds 10]`.

Starts a release `prospect-api serve` on the benchmark database that `bench/run.py` seeded, puts one
wrk load case on it, and prints the CPU time per request spent by the API process, by PostgreSQL
(all its processes) and by the whole machine, read from /proc. It then runs the case's statements
through pgbench with the same client count and prints the same split, so the two sides compare
directly. With `perf` installed (Debian: linux-perf) it also samples the API process and prints its
CPU by crate, which is the profile bench/README.md quotes.

Standard library only; needs wrk, pgbench, psql.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's data, server and request helpers)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid):
    """User and system time of `pid` and of its children that ended (PostgreSQL's postmaster reaps
    the backends of pgbench's connections, so their time is counted there)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS
    except OSError:  # the process ended meanwhile
        return 0.0


def postgres_pids():
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "postgres":
                    pids.append(pid)
        except OSError:
            pass
    return pids


def machine_cpu_seconds():
    with open("/proc/stat") as stat:
        user, nice, system = map(int, stat.readline().split()[1:4])
    return (user + nice + system) / CLOCK_TICKS


def cpu_split(api_pid, command):
    """Runs `command`; returns (its output, CPU seconds of the API, of PostgreSQL, of the machine)."""
    postgres_before = {pid: process_cpu_seconds(pid) for pid in postgres_pids()}
    api_before, machine_before = process_cpu_seconds(api_pid), machine_cpu_seconds()
    out = run.sh(*command)
    postgres = sum(process_cpu_seconds(pid) - postgres_before.get(pid, 0.0) for pid in postgres_pids())
    return out, process_cpu_seconds(api_pid) - api_before, postgres, machine_cpu_seconds() - machine_before


def print_split(label, count, api, postgres, machine):
    per = lambda seconds: f"{1000 * seconds / count:.3f} ms"  # noqa: E731
    print(f"{label}: {count:,} requests; CPU per request: API {per(api)}, PostgreSQL {per(postgres)}, "
          f"whole machine {per(machine)}")


def perf_by_crate(api_pid, seconds, workdir):
    """Samples the API process with perf; returns its CPU shares by crate (or kernel / libc)."""
    data = os.path.join(workdir, "perf.data")
    subprocess.run(["perf", "record", "-q", "-F", "999", "-p", str(api_pid), "-o", data, "--", "sleep", str(seconds)],
                   check=True, capture_output=True)
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio"],
                            check=True, capture_output=True, text=True).stdout
    shares = collections.Counter()
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not match:
            continue
        percent, dso, kind, symbol = float(match[1]), match[2], match[3], match[4]
        if kind == "k":
            key = "kernel (network, scheduling)"
        elif "libc" in dso:
            key = "libc (malloc, memcpy)"
        else:
            key = re.split(r"::|<| ", symbol.lstrip("<&"))[0] or symbol
        shares[key] += percent
    return shares


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="100k", choices=sorted(run.SIZES))
    parser.add_argument("--case", default="a", choices=["a", "c", "d"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=run.ROOT)
    url = run.prepare_database(args.server, args.size)
    run.refresh_durations(url)  # views current: no catch-up refresh competing with the load
    server = run.start_server(url, run.NO_RESPONSE_CACHE)
    values = {"a": run.INDUSTRIES, "c": run.COUNTRIES, "d": run.TERMS}[args.case]
    try:
        with tempfile.TemporaryDirectory() as workdir:
            requests = run.case_requests()[args.case]
            run.run_wrk(requests, 2, workdir)  # warm up
            listing = os.path.join(workdir, "requests.txt")
            with open(listing, "w") as f:
                f.writelines(f"{path}\t\n" for path, _ in requests)
            script = os.path.join(workdir, "requests.lua")
            with open(script, "w") as f:
                f.write(run.WRK_SCRIPT)
            os.environ["WRK_REQUESTS"] = listing
            out, api, postgres, machine = cpu_split(server.pid, [
                "wrk", "-t2", f"-c{run.CLIENTS}", f"-d{args.seconds}s", "-s", script, run.API])
            count = int(next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1])
            print_split(f"API, case ({args.case}), {args.size}", count, api, postgres, machine)

            files = []
            for i, value in enumerate(values):
                path = os.path.join(workdir, f"script{i}.sql")
                with open(path, "w") as f:
                    f.write(run.api_sql(args.case, value, url) + "\n")
                files += ["-f", f"{path}@1"]
            out, _, postgres, machine = cpu_split(server.pid, [
                "pgbench", "-n", "-M", "simple", "-c", str(run.CLIENTS), "-j", "2", "-T", str(args.seconds), *files, url])
            count = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
            print_split("pgbench, the same statements", count, 0.0, postgres, machine)

            if shutil.which("perf"):
                load = subprocess.Popen(["wrk", "-t2", f"-c{run.CLIENTS}", f"-d{args.seconds + 2}s", "-s", script, run.API],
                                        stdout=subprocess.DEVNULL)
                shares = perf_by_crate(server.pid, args.seconds, workdir)
                load.wait()
                total = sum(shares.values())
                print("API process CPU by crate (perf, self time):")
                for key, percent in shares.most_common(12):
                    print(f"  {100 * percent / total:5.1f}%  {key}")
            else:
                print("(perf not installed: no per-crate profile)")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
