#!/usr/bin/env python3
"""Checks that the alerting rules and the Grafana dashboard use only metrics
(and, in label matchers, only label names) that the Rust sources register.

    python3 deploy/check_metrics.py [--promtool PATH]

Reads every `register_*!("name", "help", &["label", ...])` in
{relay,archiver,api,cli,core,archive,pg}/src/**/*.rs, the expressions of
deploy/prometheus/strata-rules.yml (PyYAML) and every "expr" and
label_values() query of deploy/grafana/strata-dashboard.json, and prints
each metric used that no code registers. Histograms may be used with their
_bucket, _sum and _count series only. Names recorded by the rules file
(`record:`) and Prometheus's own series (up, ALERTS) are allowed.

With promtool on PATH (or --promtool), each dashboard expression is also
parsed, by loading it as a recording rule with Grafana's variables
substituted. Exit status 1 on any problem.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["relay", "archiver", "api", "cli", "core", "archive", "pg"]
RULES = ROOT / "deploy/prometheus/strata-rules.yml"
README = ROOT / "README.md"
DASHBOARD = ROOT / "deploy/grafana/strata-dashboard.json"

# Series Prometheus itself makes.
BUILTIN = {"up": set(), "ALERTS": {"alertname", "alertstate", "severity"},
           "ALERTS_FOR_STATE": {"alertname"}}
# Labels every scraped series gets from its target.
TARGET_LABELS = {"instance", "job"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan", "atan2"}

REGISTER = re.compile(
    r"register_(?P<kind>int_counter|counter|int_gauge|gauge|histogram)(?P<vec>_vec)?!\s*\(\s*"
    r'"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"\s*,\s*"(?:[^"\\]|\\.)*"\s*'
    r"(?:,\s*&\[(?P<labels>[^\]]*)\])?",
    re.S,
)
OPTS = re.compile(r'(?:Histogram)?Opts::new\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')


def registered_metrics():
    """{name: (kind, labels)} from the Rust sources."""
    found = {}
    for crate in CRATES:
        for path in sorted((ROOT / crate / "src").rglob("*.rs")):
            text = path.read_text(encoding="utf-8")
            for m in REGISTER.finditer(text):
                labels = set(re.findall(r'"([^"]+)"', m.group("labels") or ""))
                found[m.group("name")] = (m.group("kind"), labels, str(path.relative_to(ROOT)))
            for name in OPTS.findall(text):
                found.setdefault(name, ("unknown", None, str(path.relative_to(ROOT))))
    return found


def grafana_to_promql(expr):
    """Grafana variables replaced by values PromQL accepts."""
    expr = re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)
    return re.sub(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*(?::[a-z]+)?\}?", ".*", expr)


def metrics_in(expr):
    """[(metric name, {label names in its matchers} or None)] of a PromQL expression."""
    used = []
    expr = re.sub(r"#.*", "", expr)
    # Selectors with matchers: name{...}; a bare {...} carries __name__.
    def selector(m):
        name = m.group(1)
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)))
        if name:
            used.append((name, labels))
        else:
            for v in re.findall(r'__name__\s*=~?\s*"([^"]*)"', m.group(2)):
                used.append((v, None))
        return " "
    rest = re.sub(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^{}]*)\}", selector, expr)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)                      # strings
    rest = re.sub(r"\[[^\]]*\]", " ", rest)                               # ranges
    rest = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    rest = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", rest)
    rest = re.sub(r"\$\{?[a-zA-Z_][a-zA-Z0-9_:]*\}?", " ", rest)          # Grafana variables
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", rest):
        name, call = m.group(1), m.group(2)
        if call or name in KEYWORDS or re.fullmatch(r"[0-9].*", name):
            continue
        used.append((name, None))
    return used


def rule_expressions():
    """[(where, expr)], recorded names, {alert: runbook annotation}."""
    import yaml  # PyYAML: Debian's python3-yaml, or pip install pyyaml

    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    exprs, recorded, runbooks = [], set(), {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            what = rule.get("alert") or rule.get("record")
            exprs.append((f"{RULES.name}: {what}", str(rule["expr"])))
            if "record" in rule:
                recorded.add(rule["record"])
            else:
                runbooks[what] = rule.get("annotations", {}).get("runbook", "")
    return exprs, recorded, runbooks


def readme_anchors():
    """GitHub's anchors of README.md's headings."""
    anchors, in_code = set(), False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            text = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
            base, n = slug, 1
            while slug in anchors:
                slug, n = f"{base}-{n}", n + 1
            anchors.add(slug)
    return anchors


def runbook_problems(runbooks):
    """Alerts without a runbook, or pointing at a README heading that does not
    exist (an error once README.md has its Deployment section)."""
    problems, missing = [], []
    anchors = readme_anchors()
    for alert, runbook in sorted(runbooks.items()):
        m = re.fullmatch(r"README\.md#([\w-]+)", runbook)
        if not m:
            problems.append(f"{RULES.name}: {alert}: runbook {runbook!r} is not README.md#<anchor>")
        elif m.group(1) not in anchors:
            missing.append(f"{alert} -> #{m.group(1)}")
    if missing and "deployment" in anchors:
        problems += [f"{RULES.name}: runbook anchor not in README.md: {m}" for m in missing]
    elif missing:
        print(f"note: README.md has no Deployment section yet; {len(missing)} runbook anchors wait for it")
    return problems


def dashboard_expressions():
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs, problems = [], []
    if not 36 <= int(doc.get("schemaVersion", 0)) <= 41:
        problems.append(f"{DASHBOARD.name}: schemaVersion {doc.get('schemaVersion')} (want ~39)")
    variables = {v["name"] for v in doc.get("templating", {}).get("list", [])}
    if "datasource" not in variables:
        problems.append(f"{DASHBOARD.name}: no `datasource` templating variable")

    def walk(node, where):
        if isinstance(node, dict):
            title = node.get("title", where)
            if node.get("type") not in (None, "row", "datasource") and "datasource" in node:
                uid = node["datasource"].get("uid") if isinstance(node["datasource"], dict) else node["datasource"]
                if uid not in ("${datasource}", "$datasource", "-- Grafana --"):
                    problems.append(f"{DASHBOARD.name}: {title}: datasource {uid!r} is not the variable")
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    exprs.append((f"{DASHBOARD.name}: {title}", value))
                elif key == "definition" and isinstance(value, str):
                    lv = re.fullmatch(r"\s*label_values\((?:(.+),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\)\s*", value)
                    if lv and lv.group(1):
                        exprs.append((f"{DASHBOARD.name}: variable {node.get('name')}", lv.group(1)))
                else:
                    walk(value, title)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(doc, "dashboard")
    return exprs, problems


def promtool_parse(promtool, exprs):
    """Problems promtool finds parsing the expressions (as recording rules)."""
    import yaml

    rules = [{"record": f"check:expr_{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        path = f.name
    try:
        out = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if out.returncode == 0:
        return []
    return [f"promtool rejects a dashboard expression:\n{out.stdout}{out.stderr}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", default=shutil.which("promtool"))
    args = parser.parse_args()

    code = registered_metrics()
    if not code:
        print("no registered metrics found in the Rust sources", file=sys.stderr)
        return 1
    rule_exprs, recorded, runbooks = rule_expressions()
    dash_exprs, problems = dashboard_expressions()
    problems += runbook_problems(runbooks)

    used = {}
    for where, expr in rule_exprs + dash_exprs:
        for name, labels in metrics_in(expr):
            base, suffix = name, ""
            m = re.fullmatch(r"(.+)(_bucket|_sum|_count)", name)
            if name not in code and m and code.get(m.group(1), ("",))[0] == "histogram":
                base, suffix = m.group(1), m.group(2)
            used.setdefault(name, set()).add(where)
            if base in code:
                kind, known, _ = code[base]
                if kind == "histogram" and not suffix:
                    problems.append(f"{where}: histogram {base} used without _bucket/_sum/_count")
                allowed = (known or set()) | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
                if labels and known is not None and not labels <= allowed:
                    problems.append(f"{where}: {name} has no label(s) {sorted(labels - allowed)}"
                                    f" (it has {sorted(known)})")
            elif name in BUILTIN or name in recorded:
                pass
            else:
                problems.append(f"{where}: metric {name} is not registered in the Rust sources")

    if args.promtool:
        problems += promtool_parse(args.promtool, dash_exprs)
    else:
        print("promtool not found: dashboard expressions not parsed")

    unused = sorted(set(code) - {re.sub(r"_(bucket|sum|count)$", "", n) for n in used})
    print(f"{len(code)} metrics registered in the Rust sources; {len(rule_exprs)} rule and "
          f"{len(dash_exprs)} dashboard expressions use {len(used)} names")
    if unused:
        print("registered but used by neither rules nor dashboard: " + ", ".join(unused))
    for problem in problems:
        print(f"ERROR {problem}")
    if problems:
        return 1
    print("OK: every metric and matcher label used is registered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
