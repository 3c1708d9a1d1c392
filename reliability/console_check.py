#!/usr/bin/env python3
"""The admin console works in a real browser: `python3 reliability/console_check.py [--binary PATH]`.

Starts `prospect-api serve` on a free port over a scratch database (migrated, seeded with 300
companies, refreshed, then refreshed again through `POST /admin/refresh` so the refresh log spans more
than one page), with a fresh random ADMIN_TOKEN and deploy/access-policy.toml. Opens /admin/console in
headless Chromium, driven through the Chrome DevTools Protocol, with every host but 127.0.0.1
unresolvable, and uses the page as an admin would:

- a wrong token is refused (#login-error says so, #console stays hidden); the right one signs in as admin;
- the views table has the three read models with their row counts, and their data age ticks;
- the timeline chart is drawn (#timeline's data-points > 0, path.duration in its svg);
- the response cache and read routing are shown;
- "Refresh all" shows its progress, then "done", and a newer refresh-log row appears;
- the refresh log pages with Older / Newer (when there is more than one page);
- creating an API key shows its `pak_` secret and adds a row; the key reads the API; revoking it marks
  the row revoked, and the API then answers the key 401;
- the audit log lists the key's creation and revocation, and its filters (credential, UTC day) keep
  only matching rows;
- the token is in sessionStorage only: not in localStorage, cookies, the page's URL or any requested URL;
  a reload stays signed in and no longer shows the key's secret; signing out forgets the token;
- no Content-Security-Policy violation, no request to anything but 127.0.0.1, nothing failed to load,
  no JavaScript exception; the page is sent with a Content-Security-Policy whose script-src is 'self'.

Writes a full-page screenshot (default $CARGO_TARGET_DIR or target/, console.png) and exits non-zero on
failure. Every wait has a timeout, and a missing element fails naming its selector; once the page
cannot be signed in to, the console checks after it are skipped (and the run fails).

Installs Debian's chromium when it is missing. Standard library only (a minimal websocket client for
the DevTools connection is below).
"""

import base64
import datetime
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from chromium import arguments, ensure_chromium, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
DATABASE = "prospect_api_console_check"
VIEWS = ("company_prospect_view", "company_summary_view", "prospect_search_view")
# Refreshes of every view made through the API before the browser opens: with the CLI's refresh and
# the console's own, more refresh-log rows than the API's default page of 50.
SEED_REFRESHES = 17
WAIT = 15  # seconds, for anything the page does
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Failure(Exception):
    """A check that did not hold; the message says what was seen."""


def js(value):
    """A Python value as a JavaScript literal."""
    return json.dumps(value)


# --- A websocket client (RFC 6455), just what the DevTools connection needs ---------------------------

class WebSocket:
    def __init__(self, url, timeout=20):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            self.buf += chunk
        end = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if " 101 " not in head.split("\r\n")[0] + " " or accept.decode() not in head:
            raise ConnectionError(f"DevTools refused the websocket: {head.splitlines()[0]}")
        self.fragments = []

    def _frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        elif n < 1 << 16:
            header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big") \
            if n else b""
        self.sock.sendall(header + mask + masked)

    def send(self, text):
        self._frame(0x1, text.encode())

    def _parse(self):
        """One whole frame from the buffer, or None when it has not all arrived."""
        b = self.buf
        if len(b) < 2:
            return None
        fin, opcode, length, at = b[0] & 0x80, b[0] & 0x0F, b[1] & 0x7F, 2
        if length == 126:
            if len(b) < 4:
                return None
            length, at = int.from_bytes(b[2:4], "big"), 4
        elif length == 127:
            if len(b) < 10:
                return None
            length, at = int.from_bytes(b[2:10], "big"), 10
        if b[1] & 0x80:  # servers do not mask, but allow it
            if len(b) < at + 4 + length:
                return None
            mask = b[at:at + 4]
            at += 4
            payload = bytes(x ^ mask[i % 4] for i, x in enumerate(b[at:at + length]))
        else:
            if len(b) < at + length:
                return None
            payload = bytes(b[at:at + length])
        del b[:at + length]
        return fin, opcode, payload

    def recv(self, timeout):
        """The next text message, or None if none arrived within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._parse()
            if frame is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.sock.settimeout(remaining)
                try:
                    chunk = self.sock.recv(1 << 20)
                except socket.timeout:
                    return None
                if not chunk:
                    raise ConnectionError("DevTools closed the connection")
                self.buf += chunk
                continue
            fin, opcode, payload = frame
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                self.fragments.append(payload)
                if fin:
                    message, self.fragments = b"".join(self.fragments), []
                    return message.decode()

    def close(self):
        try:
            self._frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


# --- The DevTools Protocol --------------------------------------------------------------------------

class CDP:
    """One page target: commands answered in order of arrival, events recorded meanwhile."""

    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.replies = {}
        self.urls = []          # every Network.requestWillBeSent URL
        self.url_of = {}        # requestId -> URL
        self.failed = []        # (URL, errorText, canceled) of Network.loadingFailed
        self.console = []       # console messages and log entries, as "level: text"
        self.exceptions = []    # uncaught exceptions, as text
        self.dialogs = []       # (type, message) of each dialog, all accepted

    def post(self, method, params=None):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params or {}}))
        return self.next_id

    def send(self, method, params=None, timeout=30):
        """Runs a command and returns its result; events arriving meanwhile are recorded."""
        ident = self.post(method, params)
        deadline = time.monotonic() + timeout
        while ident not in self.replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Failure(f"DevTools did not answer {method} within {timeout} s")
            self._receive(remaining)
        reply = self.replies.pop(ident)
        if "error" in reply:
            error = reply["error"]
            raise Failure(f"{method}: {error.get('message')} {error.get('data', '')}".strip())
        return reply.get("result", {})

    def pump(self, seconds):
        """Records the events of the next `seconds`."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._receive(remaining)

    def _receive(self, timeout):
        text = self.ws.recv(timeout)
        if text is None:
            return
        message = json.loads(text)
        if "id" in message:
            self.replies[message["id"]] = message
        else:
            self._event(message.get("method"), message.get("params", {}))

    def _event(self, method, params):
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            self.urls.append(url)
            self.url_of[params["requestId"]] = url
        elif method == "Network.loadingFailed":
            self.failed.append((self.url_of.get(params["requestId"], "?"), params.get("errorText", ""),
                                params.get("canceled", False)))
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", a.get("type", "")))) for a in params.get("args", []))
            self.console.append(f"console.{params.get('type')}: {text}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append(f"{entry.get('source')} {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            self.exceptions.append(f"{description} ({details.get('url', '')}:{details.get('lineNumber')})")
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append((params.get("type"), params.get("message")))
            # Not awaited: the command that opened the dialog is itself waiting for it to close.
            self.post("Page.handleJavaScriptDialog", {"accept": True, "promptText": ""})

    def evaluate(self, expression, timeout=20):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True, "userGesture": True}, timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise Failure(f"script error: {details.get('exception', {}).get('description') or details.get('text')}")
        return result["result"].get("value")

    def wait_for(self, predicate, what, timeout=WAIT):
        """Polls a JavaScript expression until it is truthy and returns its value; fails naming `what`."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = self.evaluate(predicate)
                if last:
                    return last
            except Failure as e:  # e.g. the context went away during a navigation: try again
                last = str(e)
            if time.monotonic() >= deadline:
                raise Failure(f"{what}: not within {timeout} s (last: {last!r})")
            self.pump(0.1)

    def close(self):
        self.ws.close()


class Page:
    """What the checks do with the console page, each step failing with the selector it missed."""

    def __init__(self, cdp):
        self.cdp = cdp

    def evaluate(self, expression):
        return self.cdp.evaluate(expression)

    def wait_for(self, predicate, what, timeout=WAIT):
        return self.cdp.wait_for(predicate, what, timeout)

    def navigate(self, url):
        result = self.cdp.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise Failure(f"navigating to {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", f"{url} loaded")

    def exists(self, selector):
        return self.evaluate(f"document.querySelector({js(selector)}) !== null")

    def require(self, *selectors):
        missing = [s for s in selectors if not self.exists(s)]
        if missing:
            raise Failure(f"missing from the page: {', '.join(missing)}")

    def hidden(self, selector):
        value = self.evaluate(f"""(() => {{ const e = document.querySelector({js(selector)});
            return e === null ? null : e.hasAttribute('hidden'); }})()""")
        if value is None:
            raise Failure(f"{selector} is missing")
        return value

    def click(self, selector):
        state = self.evaluate(f"""(() => {{ const e = document.querySelector({js(selector)});
            if (e === null) return 'missing';
            if (e.disabled) return 'disabled';
            e.scrollIntoView({{block: 'center'}}); e.click(); return 'clicked'; }})()""")
        if state != "clicked":
            raise Failure(f"{selector} is {state}")

    def enabled(self, selector):
        state = self.evaluate(f"""(() => {{ const e = document.querySelector({js(selector)});
            return e === null ? 'missing' : (e.disabled ? 'disabled' : 'enabled'); }})()""")
        if state == "missing":
            raise Failure(f"{selector} is missing")
        return state == "enabled"

    def type(self, selector, text):
        """Clears a text field and types into it (as keyboard input, so the page's handlers run)."""
        state = self.evaluate(f"""(() => {{ const e = document.querySelector({js(selector)});
            if (e === null) return 'missing';
            e.focus(); e.value = ''; e.dispatchEvent(new Event('input', {{bubbles: true}}));
            return document.activeElement === e ? 'ok' : 'not focusable (hidden or disabled?)'; }})()""")
        if state != "ok":
            raise Failure(f"{selector} is {state}")
        if text:
            self.cdp.send("Input.insertText", {"text": text})

    def set_value(self, selector, value):
        """Sets a select's or date input's value as a user's choice would (input and change events)."""
        state = self.evaluate(f"""(() => {{ const e = document.querySelector({js(selector)});
            if (e === null) return 'missing';
            e.value = {js(value)};
            e.dispatchEvent(new Event('input', {{bubbles: true}}));
            e.dispatchEvent(new Event('change', {{bubbles: true}}));
            return e.value === {js(value)} ? 'ok' : 'refusing the value ' + {js(value)}; }})()""")
        if state != "ok":
            raise Failure(f"{selector} is {state}")

    def rows(self, table, key, cells=()):
        """The rows `#table tbody tr[data-KEY]`: [{key, class, text, cell: text...}]."""
        return self.evaluate(f"""Array.from(document.querySelectorAll({js(f'{table} tbody tr[data-{key}]')}))
            .map(r => {{ const row = {{key: r.dataset[{js(key)}], revoked: r.classList.contains('revoked'),
                                     text: Array.from(r.cells).map(c => c.textContent.trim()).join(' | ')}};
                        for (const c of {js(list(cells))}) {{ const e = r.querySelector('td.' + c);
                                                               row[c] = e === null ? null : e.textContent.trim(); }}
                        return row; }})""")

    def history_ids(self):
        return [int(r["key"]) for r in self.rows("#history", "id")]

    def storage(self):
        return self.evaluate("""({session: Object.keys(sessionStorage).map(k => sessionStorage.getItem(k)),
                                   local: Object.keys(localStorage).map(k => localStorage.getItem(k)),
                                   cookie: document.cookie, href: location.href})""")


# --- The server --------------------------------------------------------------------------------------

def request(base, method, path, token=None, body=None, headers=None, timeout=120):
    """(status, headers, body) of one request to the server; HTTP errors are answers too."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with LOCAL.open(req, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def run(binary, *args, env):
    result = subprocess.run([binary, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"`prospect-api {' '.join(args)}` failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def drop_database():
    subprocess.run(["psql", SERVER + "/postgres", "-qc", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"],
                   capture_output=True)


def start_server(binary, env, base, log):
    server = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"`prospect-api serve` exited ({server.returncode}); its log: {log.name}")
        try:
            if request(base, "GET", "/healthz", timeout=2)[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit(f"/healthz did not answer 200 within 60 s; the server's log: {log.name}")


# --- The browser -------------------------------------------------------------------------------------

def start_chromium(profile, log):
    port = free_port()
    browser = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its own group: see stop_chromium
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise SystemExit(f"chromium exited ({browser.returncode}); its log: {log.name}")
        try:
            with LOCAL.open(f"http://127.0.0.1:{port}/json", timeout=2) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages:
                return browser, pages[0]["webSocketDebuggerUrl"]
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    stop_chromium(browser)
    raise SystemExit(f"chromium's DevTools did not answer within 30 s; its log: {log.name}")


def stop_chromium(browser):
    """Kills the browser and its renderer and helper processes (the process group it leads)."""
    try:
        os.killpg(browser.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    browser.wait()
    deadline = time.monotonic() + 10  # the others, before their profile is removed
    while time.monotonic() < deadline:
        try:
            os.killpg(browser.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)


CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(
    `${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber} ${e.sample || ''}`),
  true);
"""


def open_page(cdp):
    for domain in ("Page", "Network", "Runtime", "Log"):
        cdp.send(f"{domain}.enable")
    cdp.send("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_LISTENER})
    cdp.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1800, "deviceScaleFactor": 1,
                                                    "mobile": False})
    return Page(cdp)


def screenshot(cdp, path):
    """A screenshot of the whole page (beyond the 1280×1800 viewport when the page is taller); its size."""
    metrics = cdp.send("Page.getLayoutMetrics")
    content = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": max(1280, content["width"]), "height": max(1800, content["height"]), "scale": 1}
    data = cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip},
                    timeout=60)["data"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(base64.b64decode(data))
    return os.path.getsize(path)


# --- The checks --------------------------------------------------------------------------------------

class ConsoleCheck:
    """The console's checks, in order; each returns a detail to print or raises Failure."""

    def __init__(self, page, base, token, screenshot_path):
        self.page = page
        self.base = base
        self.token = token
        self.screenshot_path = screenshot_path
        self.key_name = f"console-check-{secrets.token_hex(3)}"
        self.secret = None
        self.violations = []

    def steps(self):
        """(name, method, what happens when it fails): 'stop' skips the console steps after it,
        'always' steps run even then."""
        return [
            ("the console page loads with its sign-in form, the console hidden", self.loads, "stop"),
            ("a wrong token is refused", self.wrong_token, None),
            ("the right token signs in as admin", self.sign_in, "stop"),
            ("the views table lists the three read models with their row counts", self.views, None),
            ("the data age ticks", self.age_ticks, None),
            ("the timeline chart is drawn", self.timeline, None),
            ("the response cache and read routing are shown", self.instance, None),
            ("Refresh all shows progress, then done, and a newer refresh-log row", self.refresh_all, None),
            ("the refresh log pages with Older / Newer", self.history_paging, None),
            ("creating a key shows its pak_ secret and adds its row; the key reads the API", self.create_key, None),
            ("revoking the key marks its row revoked; the API then answers it 401", self.revoke_key, None),
            ("the audit log lists the key's creation and revocation", self.audit_lists, None),
            ("the audit filters (credential admin-token, UTC day) keep only matching rows", self.audit_filter, None),
            ("the token is in sessionStorage only: not in localStorage, cookies, or any URL", self.token_storage, None),
            ("a full-page screenshot was written", self.screenshot, "always"),
            ("a reload stays signed in and no longer shows the key's secret", self.reload, None),
            ("signing out hides the console and forgets the token", self.sign_out, None),
            ("no Content-Security-Policy violation", self.no_csp_violation, "always"),
            ("every request went to 127.0.0.1", self.local_only, "always"),
            ("nothing failed to load", self.nothing_failed, "always"),
            ("no JavaScript exception", self.no_exception, "always"),
        ]

    def loads(self):
        self.page.navigate(f"{self.base}/admin/console")
        self.page.wait_for("document.querySelector('#login') !== null", "#login on the page")
        self.page.require("#login", "#token", "#sign-in", "#login-error", "#console", "#sign-out", "#who")
        kind = self.page.evaluate("document.querySelector('#token').type")
        if kind != "password":
            raise Failure(f"#token is an input of type {kind!r}, not 'password'")
        if not self.page.hidden("#console"):
            raise Failure("#console is shown before signing in")
        return None

    def wrong_token(self):
        self.page.type("#token", secrets.token_hex(24))
        self.page.click("#sign-in")
        error = self.page.wait_for("(document.querySelector('#login-error')?.textContent ?? '').trim()",
                                   "#login-error saying the token was refused")
        if not self.page.hidden("#console"):
            raise Failure("#console is shown after a wrong token")
        return f"#login-error: {error!r}"

    def sign_in(self):
        self.page.type("#token", self.token)
        self.page.click("#sign-in")
        self.page.wait_for("!document.querySelector('#console').hasAttribute('hidden')", "#console shown")
        who = self.page.wait_for("""(() => { const t = document.querySelector('#who').textContent.trim();
                                             return t.includes('admin') && t; })()""", "#who containing 'admin'")
        return f"#who: {who!r}"

    def views(self):
        cells = ("mode", "rows", "size", "age", "last", "duration", "work", "error")
        self.page.wait_for(f"""(() => {{ const shown = Array.from(document.querySelectorAll('#views tbody tr[data-view]'))
                                                .map(r => r.dataset.view);
                                          return {js(list(VIEWS))}.every(v => shown.includes(v)); }})()""",
                           f"#views tbody tr[data-view] for each of {', '.join(VIEWS)}")
        rows = {r["key"]: r for r in self.page.rows("#views", "view", cells)}
        problems = [f"{v}: td.{c} missing" for v in VIEWS for c in cells if rows[v][c] is None]
        problems += [f"{v}: td.rows {rows[v]['rows']!r} has no count" for v in VIEWS
                     if rows[v]["rows"] is not None and not any(ch.isdigit() for ch in rows[v]["rows"])]
        problems += [f"{v}: button.refresh missing" for v in VIEWS
                     if not self.page.exists(f'#views tbody tr[data-view="{v}"] button.refresh')]
        if problems:
            raise Failure("; ".join(problems))
        return ", ".join(f"{v} {rows[v]['rows']} rows ({rows[v]['mode']})" for v in VIEWS)

    def age_ticks(self):
        query = "Array.from(document.querySelectorAll('#views tbody tr[data-view] td.age')).map(e => e.textContent.trim())"
        before = self.page.evaluate(query)
        if not before:
            raise Failure("no #views td.age")
        shown = json.dumps(before, separators=(",", ":"))  # as JSON.stringify writes it
        after = self.page.wait_for(f"(() => {{ const now = {query}; return JSON.stringify(now) !== {js(shown)} && now; }})()",
                                   "a td.age changing", timeout=8)
        return f"{before} -> {after}"

    def timeline(self):
        drawn = self.page.wait_for("""(() => {
                const t = document.querySelector('#timeline');
                if (t === null) return null;
                const points = Number(t.getAttribute('data-points'));
                const durations = t.querySelectorAll('svg path.duration').length;
                return points > 0 && durations > 0 && {points, durations,
                    ages: t.querySelectorAll('svg path.age').length,
                    flat: Array.from(t.querySelectorAll('svg path.duration, svg path.age')).filter(p => p.getTotalLength() === 0).length,
                    views: Array.from(new Set(Array.from(t.querySelectorAll('svg path[data-view]')).map(p => p.dataset.view)))};
            })()""", "#timeline with data-points > 0 and #timeline svg path.duration")
        flat = f"; {drawn['flat']} of the paths have no length (a single point: nothing visible)" if drawn["flat"] else ""
        return (f"{drawn['points']} points, {drawn['durations']} path.duration, {drawn['ages']} path.age, "
                f"views {', '.join(drawn['views'])}{flat}")

    def instance(self):
        self.page.require("#cache", "#reads")
        cache = self.page.wait_for("""(() => { const t = document.querySelector('#cache').textContent.trim();
                                              return /\\d/.test(t) && t; })()""", "#cache showing a figure")
        reads = self.page.wait_for("""(() => { const t = document.querySelector('#reads').textContent.trim();
                                              return /^(primary|replica)/i.test(t) && t; })()""",
                                   "#reads saying 'primary' or 'replica …'")
        return f"#cache {cache!r}, #reads {reads!r}"

    def refresh_all(self):
        self.page.require("#refresh-all", "#refresh-progress", "#history")
        self.page.wait_for("document.querySelectorAll('#history tbody tr[data-id]').length > 0",
                           "#history tbody tr[data-id]")
        newest = max(self.page.history_ids())
        # Every text #refresh-progress takes, however briefly.
        self.page.evaluate("""(() => {
            const e = document.querySelector('#refresh-progress');
            window.__progress = [e.textContent.trim()];
            new MutationObserver(records => {
                for (const r of records) {
                    if (r.type === 'characterData') window.__progress.push(r.target.data.trim());
                    for (const n of r.addedNodes) window.__progress.push(n.textContent.trim());
                }
                window.__progress.push(e.textContent.trim());
            }).observe(e, {childList: true, characterData: true, subtree: true});
            return true; })()""")
        self.page.click("#refresh-all")
        self.page.wait_for("/done/i.test(document.querySelector('#refresh-progress').textContent)",
                           "#refresh-progress saying 'done'", timeout=60)
        seen = [t for t in dict.fromkeys(self.page.evaluate("window.__progress")) if t]
        if not any("done" not in t.lower() for t in seen):
            raise Failure(f"#refresh-progress showed no progress before 'done' (texts: {seen})")
        ids = self.page.wait_for(f"""(() => {{ const ids = Array.from(document.querySelectorAll('#history tbody tr[data-id]'))
                                                    .map(r => Number(r.dataset.id));
                                             return Math.max(...ids) > {newest} && ids; }})()""",
                                 f"a #history row with data-id > {newest}")
        return f"progress {seen}; newest refresh-log row {newest} -> {max(ids)}"

    def history_paging(self):
        self.page.require("#history-older", "#history-newer")
        first = self.page.history_ids()
        if not self.page.enabled("#history-older"):
            return f"only one page ({len(first)} rows): #history-older disabled, paging not exercised"
        self.page.click("#history-older")
        older = self.page.wait_for(f"""(() => {{ const ids = Array.from(document.querySelectorAll('#history tbody tr[data-id]'))
                                                      .map(r => Number(r.dataset.id));
                                               return ids.length > 0 && Math.max(...ids) < {min(first)} && ids; }})()""",
                                   f"#history-older showing rows older than {min(first)}")
        if older != sorted(older, reverse=True):
            raise Failure(f"the older page is not newest first: {older}")
        self.page.wait_for("!document.querySelector('#history-newer').disabled", "#history-newer enabled on the older page", 5)
        self.page.click("#history-newer")
        # The first page again (or, had refreshes been logged meanwhile, a page holding its newest row).
        back = self.page.wait_for(f"""(() => {{ const ids = Array.from(document.querySelectorAll('#history tbody tr[data-id]'))
                                                     .map(r => Number(r.dataset.id));
                                              return ids.includes({first[0]}) && Math.min(...ids) > {older[0]} && ids; }})()""",
                                  f"#history-newer showing the first page (row {first[0]}) again")
        return (f"pages of {len(first)}: ids {first[0]}..{first[-1]}, older {older[0]}..{older[-1]}, "
                f"newer {back[0]}..{back[-1]}")

    def create_key(self):
        self.page.require("#keys", "#key-form", "#key-name", "#key-role", "#key-expires", "#key-create", "#key-secret")
        roles = self.page.wait_for("""(() => { const o = Array.from(document.querySelectorAll('#key-role option'))
                                                      .map(o => o.value).filter(v => v);
                                              return o.length > 0 && o; })()""", "#key-role options")
        missing = [r for r in ("frontend", "analyst", "partner_de", "ops") if r not in roles]
        if missing:
            raise Failure(f"#key-role offers {roles}, not the policy's {missing}")
        self.page.type("#key-name", self.key_name)
        self.page.set_value("#key-role", "analyst")
        self.page.type("#key-expires", "7")
        self.page.click("#key-create")
        self.secret = self.page.wait_for("""(() => { const t = document.querySelector('#key-secret').textContent.trim();
                                                    return t.startsWith('pak_') && t; })()""",
                                         "#key-secret showing a key starting with pak_")
        self.page.wait_for(f"""Array.from(document.querySelectorAll('#keys tbody tr[data-key]'))
                                   .some(r => r.dataset.key === {js(self.key_name)} || r.textContent.includes({js(self.key_name)}))""",
                           f"a #keys tbody tr[data-key] for {self.key_name}")
        stored = self.page.storage()
        if any(self.secret in v for v in stored["session"] + stored["local"]) or self.secret in stored["cookie"]:
            raise Failure("the new key's secret was stored in the browser")
        status = request(self.base, "GET", "/prospects?limit=1", token=self.secret)[0]
        if status != 200:
            raise Failure(f"GET /prospects?limit=1 with the new key answered {status}")
        # An export with the key: an audit row of another credential, for the filter to leave out.
        request(self.base, "GET", "/companies?format=csv", token=self.secret)
        roles_shown = [r["text"] for r in self.page.rows("#keys", "key") if self.key_name in r["text"]]
        return f"{self.key_name} (analyst): {self.secret[:8]}…; row {roles_shown[0][:80]!r}; GET /prospects 200"

    def key_row(self):
        return f'#keys tbody tr[data-key="{self.key_name}"]'

    def revoke_key(self):
        if self.secret is None:
            raise Failure("no key was created")
        if not self.page.exists(self.key_row()):
            raise Failure(f"{self.key_row()} is missing (data-key is not the key's name?)")
        dialogs = len(self.page.cdp.dialogs)
        self.page.click(f"{self.key_row()} button.revoke")
        self.page.wait_for(f"""(() => {{ const r = document.querySelector({js(self.key_row())});
                                        return r !== null && r.classList.contains('revoked')
                                               && r.querySelector('button.revoke')?.disabled === true; }})()""",
                           f"{self.key_row()} with class revoked and button.revoke disabled")
        # Every instance refuses a revoked key within a second; few tries, as wrong secrets count
        # towards the lock-out of this address.
        for _ in range(4):
            status = request(self.base, "GET", "/prospects?limit=1", token=self.secret)[0]
            if status == 401:
                break
            time.sleep(1)
        if status != 401:
            raise Failure(f"GET /prospects?limit=1 with the revoked key answered {status}, not 401")
        asked = self.page.cdp.dialogs[dialogs:]
        return f"{'confirmed ' + repr(asked[0][1]) if asked else 'no confirm()'}; the key now gets 401"

    def audit_rows(self):
        return self.page.rows("#audit", "id", ("credential", "action", "endpoint", "outcome"))

    def audit_lists(self):
        self.page.require("#audit", "#audit-credential", "#audit-day", "#audit-filter", "#audit-older")
        # An unfiltered reload, whatever the page showed before.
        self.page.type("#audit-credential", "")
        self.page.set_value("#audit-day", "")
        self.page.click("#audit-filter")
        name = self.key_name

        def found():
            rows = self.audit_rows()
            created = [r for r in rows if "admin" in (r["action"] or "").lower() and (r["endpoint"] or "").endswith("/admin/keys")]
            revoked = [r for r in rows if r["action"] == "admin" and f"/admin/keys/{name}" in (r["endpoint"] or "")]
            return rows, created, revoked

        deadline = time.monotonic() + WAIT
        rows, created, revoked = found()
        while not (created and revoked) and time.monotonic() < deadline:
            self.page.cdp.pump(0.2)
            rows, created, revoked = found()
        if not rows:
            raise Failure("no #audit tbody tr[data-id]")
        if any(r[c] is None for r in rows for c in ("credential", "action", "endpoint", "outcome")):
            raise Failure("an #audit row lacks one of td.credential, td.action, td.endpoint, td.outcome")
        if not (created and revoked):
            raise Failure(f"no admin row for {'POST /admin/keys' if not created else f'DELETE /admin/keys/{name}'} "
                          f"among {[(r['credential'], r['action'], r['endpoint']) for r in rows[:12]]}")
        return (f"{len(rows)} rows; created by {created[0]['credential']} ({created[0]['outcome']}), "
                f"revoked by {revoked[0]['credential']} ({revoked[0]['outcome']})")

    def audit_filter(self):
        before = self.audit_rows()
        others = sum(r["credential"] != "admin-token" for r in before)
        today = datetime.datetime.now(datetime.timezone.utc).date()
        # Yesterday (UTC) the scratch database did not exist: no row.
        self.page.type("#audit-credential", "admin-token")
        self.page.set_value("#audit-day", (today - datetime.timedelta(days=1)).isoformat())
        self.page.click("#audit-filter")
        self.page.wait_for("document.querySelectorAll('#audit tbody tr[data-id]').length === 0",
                           "no #audit row for yesterday (UTC)")
        self.page.set_value("#audit-day", today.isoformat())
        self.page.click("#audit-filter")
        self.page.wait_for("document.querySelectorAll('#audit tbody tr[data-id]').length > 0",
                           f"#audit rows for admin-token on {today}")
        self.page.cdp.pump(0.5)  # let a late render land
        rows = self.audit_rows()
        wrong = [r["credential"] for r in rows if r["credential"] != "admin-token"]
        if wrong:
            raise Failure(f"the filtered table still has rows of {sorted(set(wrong))}")
        return (f"yesterday: 0 rows; {today}: {len(rows)} rows, all admin-token "
                f"(the unfiltered page had {others} of other credentials)")

    def token_storage(self):
        stored = self.page.storage()
        problems = []
        if not any(self.token in v for v in stored["session"]):
            problems.append("not in sessionStorage")
        if any(self.token in v for v in stored["local"]):
            problems.append("in localStorage")
        if self.token in stored["cookie"]:
            problems.append("in a cookie")
        if self.token in stored["href"]:
            problems.append(f"in the page's URL {stored['href']}")
        leaked = [u for u in self.page.cdp.urls if self.token in u or (self.secret and self.secret in u)]
        if leaked:
            problems.append(f"in requested URLs: {leaked[:3]}")
        if problems:
            raise Failure("the token is " + "; ".join(problems))
        return f"checked {len(self.page.cdp.urls)} requested URLs"

    def screenshot(self):
        size = screenshot(self.page.cdp, self.screenshot_path)
        if size <= 10_000:
            raise Failure(f"{self.screenshot_path} is only {size} bytes")
        return f"{self.screenshot_path}, {size // 1024} kB"

    def collect_violations(self):
        try:
            self.violations += self.page.evaluate("(window.__cspViolations || []).splice(0)") or []
        except Failure:
            pass

    def reload(self):
        self.collect_violations()
        self.page.cdp.send("Page.reload", {"ignoreCache": True})
        self.page.wait_for("document.readyState === 'complete' && document.querySelector('#console') !== null",
                           "the reloaded page")
        self.page.wait_for("!document.querySelector('#console').hasAttribute('hidden')",
                           "#console shown after the reload (the token restored from sessionStorage)")
        self.page.wait_for("document.querySelectorAll('#views tbody tr[data-view]').length >= 3",
                           "#views rows after the reload")
        if self.secret and self.secret in self.page.evaluate("document.documentElement.outerHTML"):
            raise Failure("the key's secret is on the page again after the reload")
        return None

    def sign_out(self):
        self.page.click("#sign-out")
        self.page.wait_for("document.querySelector('#console').hasAttribute('hidden')", "#console hidden after #sign-out")
        stored = self.page.storage()
        if any(self.token in v for v in stored["session"] + stored["local"]):
            raise Failure("the token is still in the browser's storage after signing out")
        return None

    def no_csp_violation(self):
        self.collect_violations()
        messages = [m for m in self.page.cdp.console if "Content Security Policy" in m or "Content-Security-Policy" in m]
        if self.violations or messages:
            raise Failure("; ".join((self.violations + messages)[:5]))
        return None

    def local_only(self):
        elsewhere = []
        for url in self.page.cdp.urls:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("data", "blob", "about") and parts.hostname != "127.0.0.1":
                elsewhere.append(url)
        if elsewhere:
            raise Failure(f"requested {sorted(set(elsewhere))[:5]}")
        return f"{len(self.page.cdp.urls)} requests"

    def nothing_failed(self):
        failed = [f"{url}: {error}" for url, error, canceled in self.page.cdp.failed if not canceled]
        if failed:
            raise Failure("; ".join(failed[:5]))
        return None

    def no_exception(self):
        if self.page.cdp.exceptions:
            raise Failure("; ".join(self.page.cdp.exceptions[:5]))
        return None


def report(results, name, ok, detail=None):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)


def csp_header(base):
    """The page's Content-Security-Policy allows scripts from this origin only."""
    status, headers, _ = request(base, "GET", "/admin/console")
    if status != 200:
        raise Failure(f"GET /admin/console answered {status} (a binary built without the console?)")
    policy = headers.get("Content-Security-Policy")
    if not policy:
        raise Failure("no Content-Security-Policy header")
    directives = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}
    scripts = directives.get("script-src", directives.get("default-src"))
    if scripts is None or "'self'" not in scripts or "'unsafe-inline'" in scripts or "'unsafe-eval'" in scripts:
        raise Failure(f"script-src is {scripts} in {policy!r}")
    return policy


def main():
    args = arguments(__doc__, "console.png")
    ensure_chromium()
    token = secrets.token_hex(24)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DATABASE_URL=f"{SERVER}/{DATABASE}", BIND_ADDR=f"127.0.0.1:{port}", RUST_LOG="warn",
               REFRESH_INTERVAL="0", ADMIN_TOKEN=token, ACCESS_POLICY=os.path.join(ROOT, "deploy", "access-policy.toml"))
    server_log = tempfile.NamedTemporaryFile(prefix="console_check-server-", suffix=".log", delete=False)
    browser_log = tempfile.NamedTemporaryFile(prefix="console_check-chromium-", suffix=".log", delete=False)
    results = []
    server = browser = cdp = None
    profile = tempfile.mkdtemp(prefix="console_check-profile-")
    try:
        drop_database()
        run(args.binary, "migrate", env=env)
        run(args.binary, "seed", "--companies", "300", env=env)
        run(args.binary, "refresh", env=env)
        server = start_server(args.binary, env, base, server_log)
        for _ in range(SEED_REFRESHES):
            status, _, body = request(base, "POST", "/admin/refresh", token=token)
            if status != 200:
                raise SystemExit(f"POST /admin/refresh answered {status}: {body[:500]!r}")
        for _ in range(2):  # a miss and a hit, for the cache's figures
            request(base, "GET", "/companies?limit=5", token=token)

        try:
            report(results, "the page is sent with a Content-Security-Policy whose script-src is 'self'", True,
                   csp_header(base))
        except Failure as e:
            report(results, "the page is sent with a Content-Security-Policy whose script-src is 'self'", False, e)

        browser, ws_url = start_chromium(profile, browser_log)
        cdp = CDP(ws_url)
        check = ConsoleCheck(open_page(cdp), base, token, args.screenshot)
        stopped = None
        for name, step, on_failure in check.steps():
            if stopped and on_failure != "always":
                print(f"skip {name} (after: {stopped})", flush=True)
                continue
            try:
                report(results, name, True, step())
            except Failure as e:
                report(results, name, False, e)
                if on_failure == "stop":
                    stopped = name
            except Exception as e:  # a surprise (the page's shape, the connection): still a failure, named
                report(results, name, False, f"{type(e).__name__}: {e}")
                if on_failure == "stop":
                    stopped = name
    finally:
        if cdp is not None:
            cdp.close()
        if browser is not None:
            stop_chromium(browser)
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(profile, ignore_errors=True)
        drop_database()
    ok = bool(results) and all(results)
    for log in (server_log, browser_log):
        log.close()
    if ok:
        os.unlink(server_log.name)
        os.unlink(browser_log.name)
    else:
        print(f"server log: {server_log.name}\nchromium log: {browser_log.name}")
    print(f"screenshot: {args.screenshot}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
