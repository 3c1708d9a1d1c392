"""What the headless-browser checks (docs_render.py, console_check.py) share: Debian's chromium,
installed when missing, and a free local port for it or for the server under test."""

import shutil
import socket
import subprocess


def ensure_chromium():
    if not shutil.which("chromium"):
        print("installing Debian's chromium", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
