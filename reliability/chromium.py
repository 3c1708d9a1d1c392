"""What the headless-browser checks (docs_render.py, console_check.py) share: their options,
Debian's chromium, installed when missing, and a free local port for it or for the server under
test."""

import argparse
import os
import shutil
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def arguments(doc, screenshot):
    """The options of a check: the binary it runs, and where its screenshot goes (`screenshot` in
    $CARGO_TARGET_DIR or target/ by default)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "debug", "prospect-api"))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    parser.add_argument("--screenshot", default=os.path.join(target, screenshot))
    return parser.parse_args()


def ensure_chromium():
    if not shutil.which("chromium"):
        print("installing Debian's chromium", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
