"""Grafana provisioning: the datasource, the dashboard provider and every panel's SQL.

Each panel query runs against real PostgreSQL with the fixture fleet, with Grafana's macros
and template variables expanded as Grafana's PostgreSQL datasource expands them, as a role
that may read the grafana_* views and nothing else; it must return the columns its panel
shows. Each dashboard is checked against the structure of the schemaVersion it declares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from bk_reporter.pgcluster import LocalCluster
from support.web_fleet import SCENARIOS, StoredFleet, stored_fleet

pytestmark = pytest.mark.slow

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SCHEMA_VERSION = 39
DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "bk-postgres"}
PANEL_ROLE = "bk_grafana_panels_test"
PANEL_TYPES = {"stat", "table", "timeseries", "bargauge"}
VARIABLE_TYPES = {"query", "adhoc", "constant", "datasource", "interval", "textbox", "custom"}
UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
INTERVALS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
STATES = ["stale", "missing", "failing", "gap", "unconfirmed", "late", "ok"]

# The columns each panel shows, in order, by dashboard uid and panel title.
EXPECTED_COLUMNS = {
    "bk-fleet-health": {
        "Jobs by state": STATES,
        "Jobs that are not ok": ["state", "host", "job", "kind", "last success", "overdue by", "last run"],
        "Runs per day: succeeded and failed": ["time", "succeeded", "failed"],
        "Success rate per day, by kind": ["time", "metric", "success rate"],
        "Backups per day, by host and job": ["time", "metric", "backups"],
        "Backup frequency per host and job": ["host", "job", "backups", "per day", "failed", "last backup"],
    },
    "bk-trends": {
        "Backup duration": ["time", "metric", "duration"],
        "Data added per day": ["time", "metric", "data added"],
        "Data added, cumulative": ["time", "metric", "data added"],
        "Files changed per backup": ["time", "metric", "files new or changed"],
        "Repository size after the latest prune": ["repository", "size"],
        "Hub and offsite lag": ["time", "hub receipt (mean)", "offsite copy (mean)", "offsite copy (max)"],
        "Snapshots not yet offsite": ["host", "job", "snapshot", "claimed", "at hub", "waiting"],
    },
}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in DASHBOARDS:
        doc = load(path)
        for panel in doc["panels"]:
            yield doc["uid"], panel


@pytest.fixture(scope="module")
def fleet(pg_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> StoredFleet:
    return stored_fleet(pg_cluster, tmp_path_factory.mktemp("fleet-keys"))


@pytest.fixture(scope="module")
def views_only(fleet: StoredFleet) -> Iterator[psycopg.Connection]:
    """A connection acting as a role that may SELECT from the grafana_* views and nothing else."""
    with psycopg.connect(fleet.database.owner_url, autocommit=True) as conn:
        views = [row[0] for row in conn.execute("SELECT viewname FROM pg_views WHERE viewname LIKE 'grafana\\_%'")]
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(PANEL_ROLE)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(PANEL_ROLE)))
        conn.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.SQL(", ").join(map(sql.Identifier, views)), sql.Identifier(PANEL_ROLE)
            )
        )
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(PANEL_ROLE)))
        yield conn


# -- Grafana's expansion of a panel's SQL ---------------------------------------------------


def _quoted(values: list[str]) -> str:
    return ",".join("'" + value.replace("'", "''") + "'" for value in values)


def _time_group(match: re.Match[str], alias: bool) -> str:
    seconds = INTERVALS[match.group(2).strip(" '")]
    grouped = f"floor(extract(epoch from {match.group(1).strip()})/{seconds})*{seconds}"
    return f'{grouped} AS "time"' if alias else grouped


def expand(text: str, start: datetime, end: datetime, variables: dict[str, list[str]]) -> str:
    """The SQL Grafana sends: time macros and multi-value variables (quoted, comma-separated)."""
    since, until = (f"'{moment.strftime('%Y-%m-%dT%H:%M:%SZ')}'" for moment in (start, end))
    text = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1)} BETWEEN {since} AND {until}", text)
    text = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", lambda m: _time_group(m, alias=True), text)
    text = re.sub(r"\$__timeGroup\(([^,]+),([^)]+)\)", lambda m: _time_group(m, alias=False), text)
    text = text.replace("$__timeFrom()", since).replace("$__timeTo()", until)
    for name, values in variables.items():
        text = re.sub(rf"\$\{{{name}\}}|\${name}\b", _quoted(values), text)
    assert "$" not in text, f"unexpanded macro or variable in {text}"
    return text


def variable_values(
    conn: psycopg.Connection, doc: dict[str, Any], start: datetime, end: datetime
) -> dict[str, list[str]]:
    """Each variable's options in dashboard order, "All" selected (as the dashboards default to)."""
    values: dict[str, list[str]] = {}
    for variable in doc["templating"]["list"]:
        rows = conn.execute(expand(variable["query"], start, end, values)).fetchall()
        values[variable["name"]] = [str(row[0]) for row in rows]
        assert values[variable["name"]], f"variable {variable['name']} has no options"
    return values


# -- the panels' queries --------------------------------------------------------------------


@pytest.mark.parametrize(("uid", "panel"), list(panels()), ids=lambda v: v if isinstance(v, str) else v["title"])
def test_panel_query_returns_the_columns_it_shows(
    uid: str, panel: dict[str, Any], fleet: StoredFleet, views_only: psycopg.Connection
) -> None:
    doc = next(load(p) for p in DASHBOARDS if load(p)["uid"] == uid)
    start, end = fleet.facts.now - timedelta(days=92), fleet.facts.now + timedelta(hours=1)
    variables = variable_values(views_only, doc, start, end)
    for target in panel["targets"]:
        cursor = views_only.execute(expand(target["rawSql"], start, end, variables))
        columns = [column.name for column in cursor.description or []]
        rows = cursor.fetchall()
        assert columns == EXPECTED_COLUMNS[uid][panel["title"]]
        assert rows, f"{panel['title']} returns no rows for three months of a fleet"
        if target["format"] == "time_series":
            check_time_series(columns, rows)
        for name in override_names(panel):
            assert name in columns, f"an override of {panel['title']} names {name!r}, which the query does not return"


def check_time_series(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """Grafana's time_series format: a time column, ascending; an optional text metric; numbers."""
    assert columns[0] == "time"
    times = [row[0].timestamp() if isinstance(row[0], datetime) else float(row[0]) for row in rows]
    assert times == sorted(times), "time series rows must be ordered by time"
    for row in rows:
        for name, value in zip(columns[1:], row[1:], strict=True):
            assert isinstance(value, str) if name == "metric" else value is None or float(value) == float(value)


def override_names(panel: dict[str, Any]) -> list[str]:
    return [o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"] if o["matcher"]["id"] == "byName"]


def test_jobs_by_state_counts_what_the_fixture_implies(fleet: StoredFleet, views_only: psycopg.Connection) -> None:
    panel = next(p for uid, p in panels() if p["title"] == "Jobs by state")
    row = views_only.execute(panel["targets"][0]["rawSql"]).fetchone()
    counts = dict(zip(STATES, row or (), strict=True))
    assert counts["stale"] == 1 and counts["late"] == 1 and counts["unconfirmed"] == 1
    assert counts["missing"] == len(SCENARIOS.missing)
    assert counts["failing"] == 2  # a failed backup and a failed restore drill
    assert counts["gap"] == 3  # the gap host's backup; the forked host's backup and check
    assert counts["ok"] > 30


def test_panels_read_only_the_grafana_views(views_only: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        views_only.execute("SELECT count(*) FROM events")


# -- the dashboards' structure --------------------------------------------------------------


def _grid_cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
    grid = panel["gridPos"]
    return {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}


def _panel_problems(panel: dict[str, Any]) -> list[str]:
    problems = []
    name = panel.get("title", "?")
    if panel.get("type") not in PANEL_TYPES:
        problems.append(f"{name}: panel type {panel.get('type')!r}")
    grid = panel.get("gridPos", {})
    if not (grid.get("h", 0) > 0 and 0 < grid.get("w", 0) <= 24 and 0 <= grid.get("x", -1) < 24):
        problems.append(f"{name}: gridPos {grid}")
    elif grid["x"] + grid["w"] > 24 or grid.get("y", -1) < 0:
        problems.append(f"{name}: gridPos {grid} leaves the 24-column grid")
    config = panel.get("fieldConfig", {})
    if not isinstance(config.get("defaults"), dict) or not isinstance(config.get("overrides"), list):
        problems.append(f"{name}: fieldConfig needs defaults and overrides")
    for override in config.get("overrides", []):
        if not {"id", "options"} <= set(override.get("matcher", {})) or not isinstance(
            override.get("properties"), list
        ):
            problems.append(f"{name}: override {override}")
    if not isinstance(panel.get("options"), dict) or panel.get("datasource") != DATASOURCE:
        problems.append(f"{name}: options and the bk datasource are required")
    targets = panel.get("targets", [])
    if not targets or len({t.get("refId") for t in targets}) != len(targets):
        problems.append(f"{name}: targets need unique refIds")
    for target in targets:
        if target.get("format") not in ("time_series", "table") or not target.get("rawQuery"):
            problems.append(f"{name}: target {target.get('refId')} must be raw SQL in time_series or table format")
        if target.get("datasource") != DATASOURCE or not target.get("rawSql", "").strip():
            problems.append(f"{name}: target {target.get('refId')} needs rawSql and the bk datasource")
    return problems


def _variable_problems(variable: dict[str, Any]) -> list[str]:
    required = {"name", "type", "hide", "query", "datasource", "multi", "includeAll", "refresh"}
    missing = sorted(required - set(variable))
    problems = [f"variable {variable.get('name')}: missing {missing}"] if missing else []
    if variable.get("type") not in VARIABLE_TYPES or variable.get("hide") not in (0, 1, 2):
        problems.append(f"variable {variable.get('name')}: type or hide")
    if variable.get("datasource") != DATASOURCE or not (variable.get("multi") and variable.get("includeAll")):
        problems.append(f"variable {variable.get('name')}: the panels use IN (${variable.get('name')}): multi and All")
    return problems


def dashboard_problems(doc: dict[str, Any]) -> list[str]:
    """What Grafana's classic dashboard model (schemaVersion 39) requires of these dashboards."""
    problems = []
    if doc.get("schemaVersion") != SCHEMA_VERSION:
        problems.append(f"schemaVersion {doc.get('schemaVersion')}, expected {SCHEMA_VERSION}")
    if not isinstance(doc.get("title"), str) or not UID.match(str(doc.get("uid", ""))):
        problems.append("title and a uid of 1 to 40 letters, digits, - or _ are required")
    if doc.get("graphTooltip") not in (0, 1, 2) or not isinstance(doc.get("editable"), bool):
        problems.append("graphTooltip must be 0, 1 or 2 and editable a boolean")
    if not all(isinstance(doc.get("time", {}).get(key), str) for key in ("from", "to")):
        problems.append("time needs from and to")
    for annotation in doc.get("annotations", {}).get("list", []):
        if not {"name", "datasource", "enable", "iconColor"} <= set(annotation):
            problems.append(f"annotation {annotation.get('name')} lacks required keys")
    for link in doc.get("links", []):
        if link.get("type") not in ("link", "dashboards") or not link.get("title"):
            problems.append(f"link {link}")
    ids = [panel.get("id") for panel in doc.get("panels", [])]
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) and i > 0 for i in ids):
        problems.append(f"panel ids must be unique positive integers: {ids}")
    taken: set[tuple[int, int]] = set()
    for panel in doc.get("panels", []):
        panel_problems = _panel_problems(panel)
        problems.extend(panel_problems)
        cells = set() if panel_problems else _grid_cells(panel)
        if taken & cells:
            problems.append(f"{panel['title']} overlaps another panel")
        taken |= cells
    for variable in doc.get("templating", {}).get("list", []):
        problems.extend(_variable_problems(variable))
    return problems


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_for_its_schema_version(path: Path) -> None:
    doc = load(path)
    assert dashboard_problems(doc) == []
    assert {panel["title"] for panel in doc["panels"]} <= set(EXPECTED_COLUMNS.get(doc["uid"], {}))


def test_dashboard_checks_catch_mistakes() -> None:
    doc = load(DASHBOARDS[0])
    broken = json.loads(json.dumps(doc))
    broken["schemaVersion"] = 27
    broken["panels"][1]["gridPos"] = dict(broken["panels"][0]["gridPos"])
    broken["panels"][2]["targets"][0]["format"] = "logs"
    problems = dashboard_problems(broken)
    assert any("schemaVersion" in p for p in problems)
    assert any("format" in p for p in problems)
    fixed_overlap = json.loads(json.dumps(doc))
    fixed_overlap["panels"][1]["gridPos"] = dict(fixed_overlap["panels"][0]["gridPos"])
    assert any("overlaps" in p for p in dashboard_problems(fixed_overlap))


def test_there_is_a_dashboard_for_each_concern() -> None:
    titles = " | ".join(panel["title"].lower() for _uid, panel in panels())
    for concern in ("state", "failed", "per host and job", "duration", "data added", "offsite"):
        assert concern in titles, concern


# -- provisioning files ---------------------------------------------------------------------


def test_datasource_provisioning_takes_the_password_from_the_environment() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "bk.yml").read_text())
    assert doc["apiVersion"] == 1
    (source,) = doc["datasources"]
    assert {"type": source["type"], "uid": source["uid"]} == DATASOURCE
    assert re.fullmatch(r"\$\{BK_GRAFANA_DB_PASSWORD\}", source["secureJsonData"]["password"])
    assert "password" not in source and "password" not in source["jsonData"]
    assert source["jsonData"]["database"].startswith("${") and source["editable"] is False


def test_dashboard_provider_points_at_the_dashboards() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "bk.yml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert provider["allowUiUpdates"] is False
