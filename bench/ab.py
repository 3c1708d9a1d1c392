#!/usr/bin/env python3
"""Builds or settings side by side, in one run: `bench/ab.py --size 1m --baseline-binary PATH
[--baseline-database NAME] [--rounds 3]`.

Two loads, each through one server per variant, the variants alternating round by round so that
drift on the machine hits them all alike:
  - case (a) of bench/run.py (`/prospects?industry=X`, first page, 12 industries at random) with the
    response cache off: every request runs its statements;
  - the mixed read load of bench/mixed.py (a Zipf mix over lists, pages, searches, companies and a
    cold tail of single prospects) with the response cache on, nothing changing.
Prints req/s per round, the medians and their ratio to the first variant, and writes the `ab` section of
bench/RESULTS.md.

The first variant is this checkout's release build; `--baseline-binary` adds another build (of an
earlier commit, say); `--access` adds this build under an access policy, every request carrying a
credential: an HS256 JWT, an RS256 JWT (verified with a JWKS file), an API key. The policy's role
sees everything, so the variants differ only by what authenticating costs. A build whose migrations differ reads its own copy of the benchmark database
(`--baseline-database`, made with `CREATE DATABASE … TEMPLATE prospect_api_bench_1m` before migrating),
so that each finds the schema it knows.

Standard library only; needs what bench/run.py needs.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import subprocess
import time
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mixed  # noqa: E402  (the mix)
import run  # noqa: E402  (data, server, wrk)


JWT_SECRET = "bench-jwt-secret-0123456789abcdef-0123456789"
FIXTURES = os.path.join(run.ROOT, "tests", "fixtures", "jwt")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(alg, claims, sign, kid=None):
    header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(sign(signing_input.encode()))


def rsa_sign(data):
    """RS256 with the test fixture key a, by openssl (the standard library has no RSA)."""
    return subprocess.run(["openssl", "dgst", "-sha256", "-sign", os.path.join(FIXTURES, "a.key.pem")],
                          input=data, capture_output=True, check=True).stdout


def access_variants(url, workdir):
    """This build under a policy, with each kind of credential."""
    policy = os.path.join(workdir, "policy.toml")
    with open(policy, "w") as f:
        f.write("[roles.bench]\n")
    with open(os.path.join(FIXTURES, "a.jwk.json")) as f:
        jwks = os.path.join(workdir, "jwks.json")
        with open(jwks, "w") as out:
            json.dump({"keys": [json.load(f)]}, out)
    claims = {"sub": "bench", "role": "bench", "exp": int(time.time()) + 24 * 3600}
    hs256 = jwt("HS256", claims, lambda data: hmac.new(JWT_SECRET.encode(), data, hashlib.sha256).digest())
    rs256 = jwt("RS256", claims, rsa_sign, kid="key-a")
    name = f"bench-{os.getpid()}"
    created = subprocess.run([run.BINARY, "keys", "create", "--role", "bench", "--name", name],
                             env=dict(os.environ, DATABASE_URL=url), capture_output=True, text=True, check=True)
    key = created.stdout.strip().splitlines()[-1]
    policy_env = {"ACCESS_POLICY": policy}
    return [
        ("JWT HS256", run.BINARY, url, {**policy_env, "JWT_SECRET": JWT_SECRET}, {"Authorization": f"Bearer {hs256}"}),
        ("JWT RS256", run.BINARY, url, {**policy_env, "JWT_JWKS": jwks}, {"Authorization": f"Bearer {rs256}"}),
        ("API key", run.BINARY, url, policy_env, {"X-API-Key": key}),
    ], name


def variants(args, url, workdir):
    found = [("this build", run.BINARY, url, {}, {})]
    if args.baseline_binary:
        baseline_url = f"{args.server}/{args.baseline_database}" if args.baseline_database else url
        found.append(("baseline", args.baseline_binary, baseline_url, {}, {}))
    key_name = None
    if args.access:
        with_access, key_name = access_variants(url, workdir)
        found += with_access
    return found, key_name


def serve(binary, url, env):
    saved = run.BINARY
    run.BINARY = binary
    try:
        return run.start_server(url, env)
    finally:
        run.BINARY = saved


def measure(binary, url, env, requests, seconds, workdir, headers=None):
    requests = [(path, {**own, **(headers or {})}) for path, own in requests]
    server = serve(binary, url, env)
    try:
        run.run_wrk(requests, 2, workdir)  # warm-up: every backend has planned and cached
        return run.run_wrk(requests, seconds, workdir)
    finally:
        server.terminate()
        server.wait()


def the_mix(url):
    """The mixed load's pre-drawn requests, made against a server of this build."""
    server = serve(run.BINARY, url, {})
    try:
        rng = random.Random(42)
        requests = mixed.distinct_requests(url, rng)
        draws, _, _ = mixed.draw_mix(requests, mixed.cold_ids(url), rng)
        return [(path, {}) for path in draws]
    finally:
        server.terminate()
        server.wait()


def table(results, chosen):
    baseline = {load: statistics.median(f["rps"] for f in results[(chosen[0][0], load)]) for load in LOADS}
    lines = ["| load | variant | req/s per round | median | ÷ first | p99 ms (median run) | errors |",
             "|---|---|---|---|---|---|---|"]
    for load in LOADS:
        for label, *_ in chosen:
            runs = results[(label, load)]
            rates = [f["rps"] for f in runs]
            median_run = sorted(runs, key=lambda f: f["rps"])[len(runs) // 2]
            lines.append(f"| {load} | {label} | {', '.join(f'{r:.0f}' for r in rates)} | "
                         f"{statistics.median(rates):.0f} | {statistics.median(rates) / baseline[load]:.3f} | "
                         f"{median_run['p99_ms']:.2f} | {sum(f['errors'] for f in runs)} |")
    return "\n".join(lines)


LOADS = ("case (a), cache off", "mixed, cache on")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", choices=sorted(run.SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--baseline-binary")
    parser.add_argument("--baseline-database", help="the baseline's copy of the benchmark database")
    parser.add_argument("--access", action="store_true",
                        help="add this build under an access policy with a JWT (HS256, RS256) and an API key")
    parser.add_argument("--server", default=os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    run.subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=run.ROOT)
    url = run.prepare_database(args.server, args.size)
    run.refresh_durations(url)
    case_a = [(f"/prospects?industry={run.quote(i)}", {}) for i in run.INDUSTRIES]
    mix = the_mix(url)
    loads = {LOADS[0]: (case_a, run.NO_RESPONSE_CACHE), LOADS[1]: (mix, {})}
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        chosen, key_name = variants(args, url, workdir)
        try:
            for round_number in range(args.rounds):
                for load, (requests, env) in loads.items():
                    for label, binary, database, extra_env, headers in chosen:
                        figures = measure(binary, database, {**env, **extra_env}, requests, args.seconds,
                                          workdir, headers)
                        results.setdefault((label, load), []).append(figures)
                        print(f"round {round_number + 1}: {load}: {label}: {figures['rps']:.0f} req/s, "
                              f"p99 {figures['p99_ms']:.2f} ms, errors {figures['errors']}", flush=True)
        finally:
            if key_name:
                subprocess.run([run.BINARY, "keys", "revoke", key_name],
                               env=dict(os.environ, DATABASE_URL=url), capture_output=True)
    text = table(results, chosen)
    print(text)
    prospects, now = run.measured_on(url)
    command = f"bench/ab.py --size {args.size} --rounds {args.rounds} --seconds {args.seconds}"
    if args.baseline_binary:
        command += " --baseline-binary … --baseline-database …"
    if args.access:
        command += " --access"
    section, title = ("ab_access", "this build without and with credentials") if args.access \
        else ("ab", "this build against a baseline")
    run.write_section(section, f"""## Side by side: {title}

Written by `{command}` on {now} UTC (same machine as above), {prospects:,} prospects. wrk,
{run.CLIENTS} connections, {args.seconds} s per run after a 2 s warm-up; variants alternating round by
round, each load's rounds one after the other.

{text}
""")


if __name__ == "__main__":
    main()
