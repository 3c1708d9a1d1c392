#!/usr/bin/env python3
"""The API reference renders with no internet: `python3 reliability/docs_render.py [--binary PATH]`.

Starts `prospect-api serve` on a free port over a scratch database, opens /docs in headless Chromium
with every host but 127.0.0.1 unresolvable (so any script, style or font from elsewhere would fail),
under the Content-Security-Policy the page is sent with, and checks that Swagger UI drew the
operations of the spec. Writes a screenshot (default $CARGO_TARGET_DIR or target/, docs.png) and exits non-zero on failure.

Installs Debian's chromium when it is missing. Standard library only.
"""

import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from chromium import arguments, ensure_chromium, free_port

SERVER = os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")


def chromium(url, *flags):
    """Runs headless Chromium on `url` with only 127.0.0.1 reachable; returns (stdout, stderr)."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", *flags, url],
            capture_output=True, text=True, timeout=120)
    return result.stdout, result.stderr


def main():
    args = arguments(__doc__, "docs.png")
    ensure_chromium()
    database = f"{SERVER}/prospect_api_docs_render"
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database, BIND_ADDR=f"127.0.0.1:{port}", RUST_LOG="warn",
               REFRESH_INTERVAL="0")
    subprocess.run([args.binary, "migrate"], env=env, check=True, capture_output=True)
    server = subprocess.Popen([args.binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/docs"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        dom, log = chromium(url, "--dump-dom")
        os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
        chromium(url, f"--screenshot={args.screenshot}", "--window-size=1280,1600")
    finally:
        server.terminate()
        server.wait()
        subprocess.run(["psql", SERVER + "/postgres", "-qc", "DROP DATABASE IF EXISTS prospect_api_docs_render"],
                       capture_output=True)
    checks = {
        "Swagger UI drew the operations": dom.count('class="opblock ') >= 10,
        "the list endpoints are on the page": "/prospects" in dom and "/companies" in dom,
        "the spec's title is shown": "prospect-api" in dom,
        "Authorize is offered (JWT, API key, admin token)": "btn authorize" in dom,
        "secured operations show their lock": dom.count("authorization__btn") >= 10,
        "no Content-Security-Policy violation": "Content Security Policy" not in log,
        "nothing failed to load": "ERR_NAME_NOT_RESOLVED" not in log and "Failed to load" not in log,
        "a screenshot was written": os.path.getsize(args.screenshot) > 10_000,
    }
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    print(f"screenshot: {args.screenshot}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
