#!/usr/bin/env python3
"""The operations files work: `python3 reliability/ops_files_check.py [--binary PATH]`.

Checks deploy/prometheus/alerts.yml with `promtool check rules` and its unit tests
(deploy/prometheus/alerts_test.yml) with `promtool test rules`; checks that the Grafana dashboard
deploy/grafana/prospect-api.json is importable (panels with PromQL targets, the ${DS_PROMETHEUS}
datasource input, unique ids, grid positions, expressions that parse); then starts `prospect-api
serve` on a free port over a scratch database, with READ_DATABASE_URL pointing at that same database
(so that the replica's gauges are exported: the server's replica probe finds a server that is not
in recovery, behind nothing), makes a few requests, and checks that every metric the alerts and the
dashboard name is in its GET /metrics. Exits non-zero on failure; drops the scratch database.

Installs Debian's prometheus package (for promtool) when promtool is missing. Standard library only.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.environ.get("DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
DATABASE_NAME = "prospect_api_ops_check"
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
ALERTS_TEST = os.path.join(ROOT, "deploy", "prometheus", "alerts_test.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "prospect-api.json")
DATASOURCE = "${DS_PROMETHEUS}"

# Settings of the caller's environment that would change what the server exports or admits.
UNSET = ["ACCESS_POLICY", "JWT_SECRET", "JWT_JWKS", "RESPONSE_CACHE_BYTES", "REFRESH_SCHEDULE",
         "REFRESH_NOTIFY", "MAX_REPLICA_LAG", "REPLICA_FALLBACK", "VIEW_MAINTENANCE", "STALE_AFTER"]

# Words of PromQL that are not metric names (functions are told by the parenthesis after them).
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and",
            "or", "unless", "atan2", "inf", "nan", "start", "end"}
# Prometheus's own metric, allowed in the rules without the service exporting it.
NOT_OURS = {"up"}
# Grafana's interval variables, replaced for parsing.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def ensure_promtool():
    if not shutil.which("promtool"):
        print("installing Debian's prometheus (for promtool)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"], check=True,
                       capture_output=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def promtool(*args):
    """Runs promtool; returns (ok, its output)."""
    result = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=ROOT)
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def rule_exprs(text):
    """The `expr:` values of a rules file, inline or block scalars (the subset of YAML rule files use)."""
    lines, exprs, i = text.splitlines(), [], 0
    while i < len(lines):
        match = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*)$", lines[i])
        i += 1
        if not match:
            continue
        indent, value = len(match.group(1)), match.group(2).strip()
        if value[:1] in ("|", ">"):
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            exprs.append(" ".join(block).strip())
        elif value[:1] in ('"', "'"):
            exprs.append(json.loads(value) if value[0] == '"' else value[1:-1].replace("''", "'"))
        else:
            exprs.append(re.sub(r"\s+#.*$", "", value))
    return exprs


def rule_blocks(text):
    """Each rule of a rules file, as its lines (from `- alert:`/`- record:` to the next)."""
    blocks = []
    for line in text.splitlines():
        if re.match(r"^\s*-\s+(alert|record):", line):
            blocks.append([])
        if blocks:
            blocks[-1].append(line)
    return blocks


def metric_names(expr):
    """Metric names a PromQL expression reads: identifiers that are not functions, keywords, labels,
    grouping lists, strings, durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"#[^\n]*", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text, flags=re.I)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word.lower() not in KEYWORDS:
            names.add(word)
    return names


def dashboard_checks(dashboard):
    """The dashboard's structure checks, and its PromQL expressions (with where each is)."""
    checks, exprs = {}, []
    panels = dashboard.get("panels") or []
    flat = []
    for panel in panels:
        flat.append(panel)
        flat.extend(panel.get("panels") or [])  # collapsed rows hold theirs
    data_panels = [p for p in flat if p.get("type") != "row"]
    checks["dashboard: title prospect-api, a uid, schemaVersion 36 or later"] = (
        dashboard.get("title") == "prospect-api" and bool(dashboard.get("uid"))
        and isinstance(dashboard.get("schemaVersion"), int) and dashboard["schemaVersion"] >= 36)
    checks["dashboard: __inputs declares the Prometheus datasource DS_PROMETHEUS"] = any(
        i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource" and i.get("pluginId") == "prometheus"
        for i in dashboard.get("__inputs") or [])
    missing = []
    for panel in data_panels:
        targets = panel.get("targets") or []
        if not targets or not all(isinstance(t.get("expr"), str) and t["expr"].strip() for t in targets):
            missing.append(panel.get("title"))
        for target in targets:
            exprs.append((f"panel {panel.get('id')} {target.get('refId')}", target.get("expr") or ""))
    checks[f"dashboard: every one of its {len(data_panels)} panels has targets, each with an expr"] = (
        bool(data_panels) and not missing)
    if missing:
        print(f"     panels without targets or exprs: {missing}")

    refs = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    refs.append((where, value))
                else:
                    walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for panel in flat:
        walk(panel, f"panel {panel.get('id')}")
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        walk(variable, f"variable {variable.get('name')}")
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        found = re.match(r"^\s*label_values\((.*),\s*\w+\)\s*$", query or "")
        if found:
            exprs.append((f"variable {variable.get('name')}", found.group(1)))
    walk(dashboard.get("annotations"), "annotations")
    wrong = [where for where, ref in refs
             if not (isinstance(ref, dict) and ref.get("uid") == DATASOURCE and ref.get("type") == "prometheus")
             and ref != DATASOURCE]
    checks[f"dashboard: all {len(refs)} datasource references are {DATASOURCE}"] = bool(refs) and not wrong
    if wrong:
        print(f"     other datasources in: {sorted(set(wrong))}")

    ids = [p.get("id") for p in flat]
    checks["dashboard: panel ids are unique"] = all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    grids = [(p.get("id"), p.get("gridPos") or {}) for p in panels]
    bad = [i for i, g in grids if not all(isinstance(g.get(k), int) for k in "hwxy")
           or g["w"] < 1 or g["h"] < 1 or g["x"] < 0 or g["x"] + g["w"] > 24]
    overlapping = [(a, b) for n, (a, g) in enumerate(grids) for b, h in grids[n + 1:]
                   if a not in bad and b not in bad
                   and g["x"] < h["x"] + h["w"] and h["x"] < g["x"] + g["w"]
                   and g["y"] < h["y"] + h["h"] and h["y"] < g["y"] + g["h"]]
    checks["dashboard: every panel has a gridPos within 24 columns, none overlapping"] = (
        bool(grids) and not bad and not overlapping)
    if bad or overlapping:
        print(f"     bad gridPos: {bad}; overlapping: {overlapping}")
    return checks, exprs


def exprs_parse(exprs):
    """Whether promtool parses every expression (as recording rules, Grafana's variables replaced)."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for n, (_, expr) in enumerate(exprs):
        for variable, value in GRAFANA_INTERVALS.items():
            expr = expr.replace(variable, value)
        rules += [f"      - record: dashboard_expr_{n}", f"        expr: {json.dumps(expr)}"]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("\n".join(rules) + "\n")
    try:
        return promtool("check", "rules", f.name)
    finally:
        os.unlink(f.name)


def request(url, method="GET", headers=None, data=None):
    """(status, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
    except OSError as error:
        return None, str(error)


def exported(text):
    """The names in a Prometheus text exposition: {name: type} from `# TYPE`, and the sample names."""
    types, samples = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return types, samples


def present(name, types, samples):
    if name in types or name in samples:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return True
    return False


def drop_database():
    subprocess.run(["psql", SERVER + "/postgres", "-qc", f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)"],
                   capture_output=True)


def live_metrics(binary, wanted):
    """Serves over a scratch database, makes the requests, and returns (checks, /metrics text)."""
    checks = {}
    database = f"{SERVER}/{DATABASE_NAME}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    token = "ops-files-check-" + secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(DATABASE_URL=database, READ_DATABASE_URL=database, BIND_ADDR=f"127.0.0.1:{port}",
               RUST_LOG="warn", REFRESH_INTERVAL="0", ADMIN_TOKEN=token)
    drop_database()
    migrated = subprocess.run([binary, "migrate"], env=env, capture_output=True, text=True)
    if migrated.returncode != 0:
        print(f"     migrate failed: {migrated.stderr.strip()[-2000:]}")
        return {"`prospect-api migrate` ran on the scratch database": False}, ""
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    text = ""
    try:
        ready = None
        for _ in range(600):  # the views are populated after the listener connects
            status, _ = request(f"{base}/readyz")
            if status == 200 or server.poll() is not None:
                ready = status
                break
            time.sleep(0.1)
        checks["the server became ready (/readyz 200) over the scratch database"] = ready == 200
        if ready != 200:
            log.seek(0)
            print(f"     server log: {log.read()[-2000:]}")
            return checks, text
        statuses = [
            request(f"{base}/prospects?limit=1")[0],
            request(f"{base}/prospects?limit=1")[0],
            request(f"{base}/no-such-route")[0],
            request(f"{base}/prospects?format=csv")[0],
            request(f"{base}/admin/refresh", "POST", {"Authorization": f"Bearer {token}"})[0],
        ]
        checks["GET /prospects?limit=1 twice, a 404, a CSV export, POST /admin/refresh: "
               f"{statuses}"] = statuses == [200, 200, 404, 200, 200]
        # The export's rows are counted once its body has been sent: scrape until everything is in.
        for _ in range(50):
            status, text = request(f"{base}/metrics")
            types, samples = exported(text if status == 200 else "")
            if all(present(name, types, samples) for name in wanted):
                break
            time.sleep(0.1)
        checks[f"GET /metrics answered 200 ({len(text.splitlines())} lines)"] = status == 200
        checks["reads go to the replica (READ_DATABASE_URL, the same database)"] = (
            'reads_served_from{server="replica"} 1' in text)
    finally:
        server.terminate()
        server.wait()
        log.close()
        drop_database()
    return checks, text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    parser.add_argument("--binary", default=os.path.join(target, "debug", "prospect-api"))
    args = parser.parse_args()
    ensure_promtool()
    checks = {}

    ok, out = promtool("check", "rules", ALERTS)
    checks["promtool check rules deploy/prometheus/alerts.yml"] = ok
    if not ok:
        print(f"     {out}")
    ok, out = promtool("test", "rules", ALERTS_TEST)
    checks["promtool test rules deploy/prometheus/alerts_test.yml"] = ok
    if not ok:
        print(f"     {out}")

    with open(ALERTS) as f:
        alerts_text = f.read()
    alert_exprs = rule_exprs(alerts_text)
    blocks = rule_blocks(alerts_text)
    checks[f"alerts: {len(blocks)} rules, an expr read from each"] = bool(blocks) and len(alert_exprs) == len(blocks)
    incomplete = [block[0].split(":", 1)[1].strip() for block in blocks
                  if not all(any(re.match(rf"^\s+{key}:", line) for line in block)
                             for key in ("for", "labels", "severity", "annotations", "summary", "description"))]
    checks["alerts: each has for, labels.severity, annotations.summary and .description"] = not incomplete
    if incomplete:
        print(f"     incomplete: {incomplete}")

    try:
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        checks["dashboard: deploy/grafana/prospect-api.json parses as JSON"] = True
    except (OSError, ValueError) as error:
        print(f"     {error}")
        checks["dashboard: deploy/grafana/prospect-api.json parses as JSON"] = False
        dashboard = {}
    structure, dashboard_exprs = dashboard_checks(dashboard)
    checks.update(structure)
    ok, out = exprs_parse(dashboard_exprs)
    checks[f"dashboard: its {len(dashboard_exprs)} expressions parse as PromQL (promtool)"] = ok and bool(dashboard_exprs)
    if not ok:
        print(f"     {out}")

    used = {}  # metric name -> where it is used
    for expr in alert_exprs:
        for name in metric_names(expr):
            used.setdefault(name, set()).add("alerts")
    for _, expr in dashboard_exprs:
        for name in metric_names(expr):
            used.setdefault(name, set()).add("dashboard")
    from_alerts_only = {name for name in NOT_OURS if used.get(name) == {"alerts"}}
    wanted = sorted(set(used) - from_alerts_only)

    if not os.path.exists(args.binary):
        checks[f"the server binary {args.binary} exists (cargo build)"] = False
        text = ""
    else:
        live, text = live_metrics(args.binary, wanted)
        checks.update(live)
    types, samples = exported(text)
    for name in wanted:
        checks[f"in /metrics: {name} ({', '.join(sorted(used[name]))})"] = present(name, types, samples)
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    for name in sorted(from_alerts_only):
        print(f"not looked for: {name} (alerts) is Prometheus's own metric")
    if types:
        unused = sorted(n for n in types if not any(u == n or (u.startswith(n + "_") and types[n] == "histogram")
                                                     for u in used))
        print(f"exported but in neither file: {', '.join(unused) or 'none'}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
