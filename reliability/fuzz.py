#!/usr/bin/env python3
"""Fuzz the live API from its own OpenAPI document with schemathesis.

Creates a fresh database, seeds a little data, starts `prospect-api serve` with an admin token on a
free port, and runs schemathesis against /openapi.json twice: with the admin token, and without one
(the admin endpoints must then refuse cleanly). Then starts a second server on the same database
enforcing an access policy (hidden columns, a row scope, a page cap, an anonymous role) and runs it
twice more: with a JWT of the restricted role, and without credentials (the anonymous role). Every check is on: no response >= 500, every status,
content type, header and body as the spec says, invalid input rejected, valid input accepted (see
schemathesis_hooks.py for the two rules a schema cannot express). Then checks that the server is
still up and that its log never contains the token.

    python3 reliability/fuzz.py                      # the full run: >= 5,000 generated requests
    python3 reliability/fuzz.py --examples 5 --quick # CI: a few hundred

Exits non-zero on any failure.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "fuzz-admin-token-" + os.urandom(12).hex()
SCHEMATHESIS_VERSION = "4.32.5"
JWT_SECRET = "fuzz-jwt-secret-" + os.urandom(16).hex()
# No rate limit: a 429 is no finding, and would hide what the requests behind it would have found.
POLICY = """
[roles.fuzzer]
hide = ["email", "prospect_phone", "prospect_mobile_phone", "company_phone", "company_mobile_phone"]
rows = { company_country = "Germany" }
max_limit = 100
[roles.anonymous]
hide = ["email", "prospect_phone"]
max_limit = 20
"""


def hs256_jwt(claims):
    """A JWT signed with JWT_SECRET (HS256), as an identity provider would issue it."""
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_schemathesis():
    try:
        subprocess.run(["schemathesis", "--version"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        print(f"installing schemathesis {SCHEMATHESIS_VERSION} from PyPI", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", f"schemathesis=={SCHEMATHESIS_VERSION}"],
            check=True,
        )


def wait_ready(base, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server at {base} did not become ready")


def run_schemathesis(base, examples, label, headers, workdir):
    command = [
        "schemathesis", "run", f"{base}/openapi.json",
        "--checks", "all",
        "--max-examples", str(examples),
        # One worker: hypothesis describing its strategies from several threads at once trips over
        # CPython 3.11's AST parser now and then ("AST constructor recursion depth mismatch").
        "--workers", "1",
        "--no-color",
        "--seed", "20261124",
        "--request-timeout", "15",
    ]
    for header in headers:
        command += ["-H", header]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks",
               PYTHONPATH=os.path.join(ROOT, "reliability"))
    started = time.time()
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=workdir)
    output = result.stdout + result.stderr
    match = re.search(r"(\d+) generated", output)
    generated = int(match.group(1)) if match else 0
    print(f"{label}: {generated} generated requests, exit {result.returncode}, "
          f"{time.time() - started:.0f} s", flush=True)
    if result.returncode != 0:
        print(output[-20000:])
    return generated, result.returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100, help="max generated cases per operation and phase")
    parser.add_argument("--binary", default=None, help="prospect-api binary (default: target/release, else target/debug)")
    parser.add_argument("--server-url", default=os.environ.get("FUZZ_SERVER_URL", "postgres://postgres@127.0.0.1:5432"),
                        help="PostgreSQL server; the script creates and drops its own database there")
    parser.add_argument("--minimum", type=int, default=None,
                        help="fail unless at least this many requests were generated (default: 5000, or 200 with --quick)")
    parser.add_argument("--quick", action="store_true", help="the short CI run")
    args = parser.parse_args()
    minimum = args.minimum if args.minimum is not None else (200 if args.quick else 5000)

    binary = args.binary
    if binary is None:
        release = os.path.join(ROOT, "target/release/prospect-api")
        binary = release if os.path.exists(release) else os.path.join(ROOT, "target/debug/prospect-api")
    ensure_schemathesis()

    database_url = f"{args.server_url}/prospect_api_fuzz_{os.getpid()}"
    env = dict(os.environ, DATABASE_URL=database_url, RUST_LOG="info")
    subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([binary, "seed", "--companies", "300", "--replace", "--refresh"],
                   env=env, check=True, capture_output=True)

    port, guarded_port = free_port(), free_port()
    base, guarded_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{guarded_port}"
    log = tempfile.NamedTemporaryFile(prefix="fuzz-server-", suffix=".log", delete=False)
    policy = tempfile.NamedTemporaryFile("w", prefix="fuzz-policy-", suffix=".toml", delete=False)
    policy.write(POLICY)
    policy.close()
    server_env = dict(env, ADMIN_TOKEN=TOKEN, LOG_FORMAT="json")
    servers = [
        subprocess.Popen([binary, "serve"], env=dict(server_env, BIND_ADDR=f"127.0.0.1:{port}"),
                         stdout=log, stderr=subprocess.STDOUT),
        subprocess.Popen([binary, "serve"],
                         env=dict(server_env, BIND_ADDR=f"127.0.0.1:{guarded_port}",
                                  ACCESS_POLICY=policy.name, JWT_SECRET=JWT_SECRET),
                         stdout=log, stderr=subprocess.STDOUT),
    ]
    jwt = hs256_jwt({"sub": "fuzzer", "role": "fuzzer", "exp": int(time.time()) + 3600})
    ok = True
    total = 0
    try:
        wait_ready(base)
        wait_ready(guarded_base)
        with tempfile.TemporaryDirectory() as workdir:
            for label, target, headers in [
                ("with the admin token", base, [f"Authorization: Bearer {TOKEN}"]),
                ("without a token", base, []),
                ("access policy, a restricted role's JWT", guarded_base, [f"Authorization: Bearer {jwt}"]),
                ("access policy, no credential (anonymous role)", guarded_base, []),
            ]:
                generated, passed = run_schemathesis(target, args.examples, label, headers, workdir)
                total += generated
                ok &= passed
        for target in (base, guarded_base):
            with urllib.request.urlopen(f"{target}/healthz", timeout=5) as r:
                alive = r.status == 200
            print(f"server {target} still answering /healthz: {alive}")
            ok &= alive
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        os.unlink(policy.name)
        subprocess.run(["dropdb", "--if-exists", "--force", "-h", "127.0.0.1", "-U", "postgres",
                        database_url.rsplit("/", 1)[1]], capture_output=True)

    with open(log.name) as f:
        server_log = f.read()
    token_logged = TOKEN in server_log or JWT_SECRET in server_log or jwt in server_log
    server_errors = len(re.findall(r'"status":5\d\d', server_log))
    print(f"server log: {len(server_log.splitlines())} lines, token present: {token_logged}, "
          f"5xx responses logged: {server_errors} ({log.name})")
    ok &= not token_logged and server_errors == 0
    print(f"total generated requests: {total} (minimum {minimum})")
    ok &= total >= minimum
    print("fuzz: PASS" if ok else "fuzz: FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
