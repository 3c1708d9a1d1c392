#!/usr/bin/env python3
"""A server's memory while the data changes (#24): `bench/memory.py [--size 1m] [--seconds 120]
[--baseline-binary PATH]` rewrites its section of bench/RESULTS.md.

A release `prospect-api serve` in incremental mode (the response cache at its default size) on the
size's database, while bench/freshness.py's writers change 50 companies a second and a reader asks
a list, a company list and a search over and over (so that every round's changes are loaded and
cached entries are carried across rounds). Its resident memory (VmRSS) is sampled every 15 s.
With `--baseline-binary`, the same for another build (of an earlier commit, say), one after the
other, side by side. Needs psql and pgbench; standard library only.
"""
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import freshness  # noqa: E402  (the database, the writers, settling)
import run as suite  # noqa: E402  (the server)

SAMPLE_EVERY = 15
READS = ["/prospects?industry=Software", "/companies?country=Germany", "/search?q=smith"]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        kb = next(line for line in status if line.startswith("VmRSS:")).split()[1]
    return round(int(kb) / 1024, 1)


def reader(stop):
    while not stop.is_set():
        for path in READS:
            try:
                suite.http_get(path)
            except OSError:
                pass
        time.sleep(0.05)


def samples(url, binary, companies, seconds, workdir):
    """RSS every SAMPLE_EVERY seconds while the data changes, from a server of `binary`."""
    server = suite.start_server(url, {"VIEW_MAINTENANCE": "incremental"}, binary=binary)
    stop = threading.Event()
    try:
        freshness.settle(url)
        reads = threading.Thread(target=reader, args=(stop,), daemon=True)
        reads.start()
        writers = freshness.start_writers(url, companies, seconds + 5, workdir)
        taken = []
        for _ in range(seconds // SAMPLE_EVERY):
            time.sleep(SAMPLE_EVERY)
            taken.append(rss_mb(server.pid))
            print(f"  {binary}: {len(taken) * SAMPLE_EVERY} s, {taken[-1]} MB", flush=True)
        stop.set()
        reads.join()
        writers.terminate()
        writers.wait()
        return taken
    finally:
        server.terminate()
        server.wait()


def bench(args):
    url = freshness.prepare(args.server, args.size)
    workdir = tempfile.mkdtemp()
    freshness.convert(url, "incremental", workdir)
    prospects, now = suite.measured_on(url)
    builds = [("this build", suite.BINARY)]
    if args.baseline_binary:
        builds.append(("baseline", args.baseline_binary))
    return {"size": args.size, "prospects": prospects, "seconds": args.seconds, "date": f"{now} UTC",
            "command": " ".join(["bench/memory.py"] + sys.argv[1:]),
            "rss_mb": {label: samples(url, binary, suite.SIZES[args.size], args.seconds, workdir)
                       for label, binary in builds}}


def describe(r):
    builds = list(r["rss_mb"])
    times = [(i + 1) * SAMPLE_EVERY for i in range(len(r["rss_mb"][builds[0]]))]
    lines = ["## Memory while the data changes", "",
             f"Written by `{r['command']}` on {r['date']}, {r['prospects']:,} prospects: a server in incremental "
             "mode (response cache 64 MiB) while writers change 50 companies a second and a reader asks a list, "
             "a company list and a search in a loop. Resident memory (VmRSS, MB) every "
             f"{SAMPLE_EVERY} s:", "",
             "| seconds | " + " | ".join(builds) + " |", "|---" * (len(builds) + 1) + "|"]
    for i, t in enumerate(times):
        lines.append(f"| {t} | " + " | ".join(str(r["rss_mb"][b][i]) for b in builds) + " |")
    lines += ["", *suite.raw_figures(r)]
    return "\n".join(lines) + "\n"


def main():
    suite.bench_main(__doc__, "memory", bench, describe, lambda parser: (
        parser.add_argument("--seconds", type=int, default=120, help="how long the data changes"),
        parser.add_argument("--baseline-binary", help="another build's prospect-api, measured after this one")))


if __name__ == "__main__":
    main()
