#!/usr/bin/env python3
"""Throwaway PostgreSQL clusters for tests and scripts: a primary and, optionally, a physical streaming
replica of it, made with PostgreSQL's own binaries (initdb, pg_basebackup -R, pg_ctl) as the `postgres`
OS user, on free ports, in a temporary directory. The machine's main server is never touched (it accepts
no replication connections, and its configuration is not ours).

As a module (bench and reliability scripts):

    with pg_cluster.Cluster(replica=True) as cluster:
        cluster.url("prospects")            # the primary
        cluster.url("prospects", "replica")
        cluster.stop("replica"); cluster.start("replica")

From the command line (the Rust tests, tests/api/replica.rs):

    python3 reliability/pg_cluster.py up [--no-replica] [--conf 'name = value' ...]
        prints {"dir": ..., "primary_port": ..., "replica_port": ...} and leaves the cluster running
    python3 reliability/pg_cluster.py stop|start DIR primary|replica
    python3 reliability/pg_cluster.py down DIR     stops both and removes DIR

Standard library only; run as root (the servers run as `postgres`).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PG_BIN = "/usr/lib/postgresql/15/bin"
NODES = ("primary", "replica")
# Durability buys nothing in a throwaway cluster; WAL streaming is unaffected.
THROWAWAY_CONF = "fsync = off\nfull_page_writes = off\nmax_connections = 200\n"


def as_postgres(*command):
    return subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True,
                          text=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(port, database, sql):
    return subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-Atq", "-h", "127.0.0.1", "-p", str(port),
                           "-U", "postgres", "-d", database, "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


class Cluster:
    """A primary (and a replica when asked) in `dir`; `close()` stops and removes everything."""

    def __init__(self, replica=True, conf=(), workdir=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="prospect-api-pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.ports = {"primary": free_port()}
        try:
            self._init_primary(conf)
            if replica:
                self.ports["replica"] = free_port()
                self._init_replica()
        except BaseException:
            self.close()
            raise

    @classmethod
    def attach(cls, workdir):
        """The cluster `up` left in `workdir`."""
        cluster = cls.__new__(cls)
        cluster.dir = workdir
        with open(os.path.join(workdir, "ports.json")) as f:
            cluster.ports = json.load(f)
        return cluster

    def data(self, node):
        return os.path.join(self.dir, node)

    def url(self, database, node="primary"):
        return f"postgres://postgres@127.0.0.1:{self.ports[node]}/{database}"

    def psql(self, database, sql, node="primary"):
        return psql(self.ports[node], database, sql)

    def start(self, node):
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", self.data(node), "-l", os.path.join(self.dir, f"{node}.log"),
                    "-w", "-t", "60", "start")

    def stop(self, node, mode="fast"):
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", self.data(node), "-m", mode, "-w", "stop")

    def running(self, node):
        return os.path.exists(os.path.join(self.data(node), "postmaster.pid"))

    def wait_for_replay(self, timeout=60):
        """Until the replica has replayed everything the primary has written so far."""
        target = self.psql("postgres", "SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.psql("postgres", f"SELECT pg_last_wal_replay_lsn() >= '{target}'", "replica") == "t":
                return
            time.sleep(0.05)
        raise TimeoutError(f"the replica did not replay up to {target} within {timeout} s")

    def close(self):
        for node in reversed(NODES):
            if node in self.ports and self.running(node):
                try:
                    self.stop(node, "immediate")
                except subprocess.CalledProcessError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def _write_ports(self):
        with open(os.path.join(self.dir, "ports.json"), "w") as f:
            json.dump(self.ports, f)

    def _configure(self, node, extra):
        with open(os.path.join(self.data(node), "postgresql.conf"), "a") as conf:
            conf.write(f"\nport = {self.ports[node]}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.dir}'\n{THROWAWAY_CONF}{extra}")

    def _init_primary(self, conf):
        # initdb's pg_hba.conf lets local and 127.0.0.1 connections replicate (trust, as on the main server).
        as_postgres(f"{PG_BIN}/initdb", "-D", self.data("primary"), "-A", "trust", "-U", "postgres", "--no-sync")
        self._configure("primary", "".join(f"{line}\n" for line in conf))
        self._write_ports()
        self.start("primary")

    def _init_replica(self):
        # -R writes standby.signal and primary_conninfo; -X stream copies the WAL written meanwhile.
        as_postgres(f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.ports["primary"]), "-U", "postgres",
                    "-D", self.data("replica"), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        # The copied postgresql.conf names the primary's port; the later line wins.
        self._configure("replica", "hot_standby = on\n")
        self._write_ports()
        self.start("replica")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="make and start a cluster; print its directory and ports as JSON")
    up.add_argument("--no-replica", action="store_true")
    up.add_argument("--conf", action="append", default=[], help="a postgresql.conf line for the primary")
    for name in ("start", "stop"):
        node_command = commands.add_parser(name, help=f"{name} one node")
        node_command.add_argument("dir")
        node_command.add_argument("node", choices=NODES)
    down = commands.add_parser("down", help="stop both nodes and remove the directory")
    down.add_argument("dir")
    args = parser.parse_args()
    if args.command == "up":
        cluster = Cluster(replica=not args.no_replica, conf=args.conf)
        print(json.dumps({"dir": cluster.dir, **{f"{n}_port": p for n, p in cluster.ports.items()}}))
    elif args.command == "down":
        Cluster.attach(args.dir).close()
    else:
        cluster = Cluster.attach(args.dir)
        getattr(cluster, args.command)(args.node)


if __name__ == "__main__":
    sys.exit(main())
