"""The unified edge dashboard: build it from dashboards/edge_overview.py, write its JSON, list its PromQL."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS_DIR = REPO_ROOT / "dashboards"
DASHBOARD_CODE = DASHBOARDS_DIR / "edge_overview.py"
DASHBOARD_JSON = DASHBOARDS_DIR / "edge-overview.json"
PROVISIONING_DIR = DASHBOARDS_DIR / "provisioning"

# Fixed datasource UIDs: the dashboard refers to them and dashboards/provisioning/datasources creates them.
PROMETHEUS_UID = "edgeharness-prometheus"
TEMPO_UID = "edgeharness-tempo"

# Grafana's built-in variables, set to what a dashboard opened on its default 15-minute range would use.
# A test against a real Prometheus overrides them to fit the run it just made.
BUILTIN_VARIABLES: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "15m",
    "__range_s": "900",
    "__range_ms": "900000",
}

# $name, ${name}, ${name:format} and the deprecated [[name]].
_VARIABLE = re.compile(r"\$\{(?P<braced>\w+)(?::(?P<fmt>[^}]*))?\}|\[\[(?P<old>\w+)\]\]|\$(?P<plain>\w+)")


def load_definition(path: Path = DASHBOARD_CODE) -> Any:
    """Imports the dashboard code (a plain file, not a package module) and returns the module."""
    if not path.is_file():
        raise FileNotFoundError(f"dashboard code not found: {path} (run from a checkout of the repository)")
    spec = importlib.util.spec_from_file_location("edgeharness_dashboard_" + path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_dashboard(path: Path = DASHBOARD_CODE) -> dict[str, Any]:
    """The dashboard as the JSON-ready dict that Grafana provisions."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    built = load_definition(path).build().build()
    # Through the SDK's encoder and back: plain dicts, lists and scalars only.
    return json.loads(json.dumps(built, cls=JSONEncoder))


def render(dashboard: Mapping[str, Any]) -> str:
    """The canonical text of the committed JSON (stable key order from the SDK, two-space indent)."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write_dashboard(out: Path = DASHBOARD_JSON, path: Path = DASHBOARD_CODE) -> Path:
    """Regenerates the committed JSON from the code."""
    out.write_text(render(build_dashboard(path)), encoding="utf-8")
    return out


def is_up_to_date(out: Path = DASHBOARD_JSON, path: Path = DASHBOARD_CODE) -> bool:
    """True when the committed JSON is exactly what the code generates."""
    return out.is_file() and out.read_text(encoding="utf-8") == render(build_dashboard(path))


def read_dashboard(path: Path = DASHBOARD_JSON) -> dict[str, Any]:
    """The committed dashboard JSON."""
    return json.loads(path.read_text(encoding="utf-8"))


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data, rows left out, panels inside collapsed rows included."""
    for panel in dashboard.get("panels") or []:
        if panel.get("type") == "row":
            yield from (p for p in panel.get("panels") or [] if p.get("type") != "row")
        else:
            yield panel


def target_datasource_uid(panel: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """The datasource UID a target queries: its own, else its panel's."""
    ref = target.get("datasource") or panel.get("datasource") or {}
    return ref.get("uid") if isinstance(ref, Mapping) else None


def is_prometheus_target(panel: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """True for a PromQL target (by datasource type, else by the fixed Prometheus UID)."""
    ref = target.get("datasource") or panel.get("datasource") or {}
    kind = ref.get("type") if isinstance(ref, Mapping) else None
    return bool(target.get("expr")) and (kind == "prometheus" or target_datasource_uid(panel, target) == PROMETHEUS_UID)


def expand_variables(text: str, variables: Mapping[str, str]) -> str:
    """Replaces Grafana variables ($x, ${x}, ${x:fmt}, [[x]]) with values; built-ins have defaults.

    A value is used as is whatever the format: pass a regex such as "nairobi|paris" for several regions.
    """
    values = {**BUILTIN_VARIABLES, **variables}

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("old") or match.group("plain")
        if name not in values:
            raise KeyError(f"no value for variable ${name} in {text!r}")
        return values[name]

    return _VARIABLE.sub(replace, text)


def panel_queries(dashboard: Mapping[str, Any], variables: Mapping[str, str]) -> list[tuple[str, str]]:
    """(panel title, PromQL with variables expanded) for every Prometheus target of every panel."""
    queries: list[tuple[str, str]] = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets") or []:
            if is_prometheus_target(panel, target) and not target.get("hide"):
                queries.append((str(panel.get("title", "")), expand_variables(target["expr"], variables)))
    return queries


def dashboard_variables(dashboard: Mapping[str, Any]) -> list[str]:
    """The names of the dashboard's template variables, in order."""
    return [v["name"] for v in (dashboard.get("templating") or {}).get("list") or []]
