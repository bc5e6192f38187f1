"""The reports dashboard (server/static/reports.html) in a real headless Chromium, driven by
Playwright (tests/js/browser.py), against a real demo server on 127.0.0.1 whose event log holds
experiment traffic sent through the real decide and events endpoints.

What the page shows is checked against the JSON routes it reads; the page must load nothing from
another origin, log no error, break no Content-Security-Policy rule, and insert data as text only
(a log line with markup in its experiment and arm names must show up as that text).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import LiveServer, _start_server
from tests.js.browser import Recorder, wait_for
from tests.server.test_reports_api import Traffic, post_traffic, wait_for_report

pytestmark = pytest.mark.browser

N_VISITORS = 150
#: An experiment and arm name with markup, planted in the log as a decision line.
EVIL_EXPERIMENT = '<img src=x id="injected">'
EVIL_ARM = "<b>bold</b>"
#: Runs before the page's script: records Content-Security-Policy violations.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@dataclass
class Site:
    live: LiveServer
    traffic: Traffic

    @property
    def url(self) -> str:
        return self.live.url

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def site(policy_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A demo server (keyless loopback, no per-IP limit) serving the policy bundle, after 150
    visitors."""
    tmp = tmp_path_factory.mktemp("reports-dashboard")
    keys = tmp / "keys.json"
    keys.write_text(json.dumps({"keys": [], "per_ip_per_minute": 0}))
    live = _start_server(
        policy_bundle_dir, tmp / "server.log", {"TAILOR_KEYS_FILE": str(keys), "TAILOR_DEMO": "1"}
    )
    try:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            traffic = post_traffic(client, N_VISITORS, "dash", trusted=False)
            wait_for_report(client.get, traffic.lines)
            # A decision line as the server writes them, but with markup in its names.
            logs = tmp / f"events-{urlsplit(live.url).port}"
            planted = {
                **_a_decision_line(logs),
                "decisionId": "planted",
                "visitorId": "planted-visitor",
                "experiment": {EVIL_EXPERIMENT: EVIL_ARM},
                "slots": {},
            }
            (logs / "events-planted.jsonl").write_text(json.dumps(planted) + "\n")
            wait_for_report(client.get, traffic.lines + 1)
        yield Site(live, traffic)
    finally:
        live.process.terminate()
        live.process.wait(timeout=10)


def _a_decision_line(logs: Path) -> dict[str, Any]:
    """The first decision line of the event log in ``logs``."""
    for path in sorted(logs.glob("events-*.jsonl")):
        for line in path.read_text().splitlines():
            record: dict[str, Any] = json.loads(line)
            if record.get("type") == "decision":
                return record
    raise AssertionError(f"no decision line in {logs}")


@pytest.fixture(scope="module")
def rec(site: Site, browser: Browser) -> Iterator[Recorder]:
    """The dashboard, loaded in a profile of the module's own, with its requests and console."""
    with browser.new_context(viewport={"width": 1400, "height": 1000}) as context:
        context.set_default_timeout(20_000)
        rec = Recorder(context.new_page())
        rec.page.add_init_script(RECORD_VIOLATIONS)
        rec.page.goto(site.url + "/reports")
        wait_for(rec.page, "document.querySelectorAll('#experiments button').length > 0")
        yield rec


@pytest.fixture(scope="module")
def page(rec: Recorder) -> Page:
    return rec.page


def _select(page: Page, experiment: str) -> None:
    key = json.dumps(experiment)
    page.evaluate(
        "[...document.querySelectorAll('#experiments button')]"
        f".find((b) => b.dataset.experiment === {key}).click()"
    )
    wait_for(
        page,
        f"document.querySelector('#arm-table tbody tr') && state_is({key})".replace(
            "state_is(", "document.querySelector('#title').textContent.includes("
        ),
    )


TABLE_JS = """
[...document.querySelectorAll('#arm-table tbody tr')].map((tr) => ({
  arm: tr.dataset.arm,
  visitors: Number(tr.cells[1].textContent.replace(/,/g, "")),
  conversions: Number(tr.cells[3].firstChild.textContent.replace(/,/g, "")),
}))
"""


def test_the_list_shows_every_experiment(page: Page, site: Site) -> None:
    listed = site.get("/v1/reports/experiments")["experiments"]
    shown = page.evaluate(
        "[...document.querySelectorAll('#experiments button')].map((b) => b.dataset.experiment)"
    )
    assert shown == [e["experiment"] for e in listed]
    assert {"holdout", "hero_test", "banner_others"} <= set(shown)
    # the holdout is listed first and selected on arrival (its report loads after the list)
    wait_for(page, "document.querySelector('#title').textContent !== ''")
    assert page.evaluate("document.querySelector('#title').textContent").startswith("holdout")


@pytest.mark.parametrize("experiment", ["hero_test", "holdout", "banner_others"])
def test_the_arm_table_and_forest_plot_match_the_json(
    page: Page, site: Site, experiment: str
) -> None:
    _select(page, experiment)
    report = site.get(f"/v1/reports/experiments/{experiment}")
    rows = page.evaluate(TABLE_JS)
    assert rows == [
        {"arm": a["arm"], "visitors": a["visitors"], "conversions": a["conversions"]}
        for a in report["overall"]["arms"]
    ]
    assert {r["arm"]: r["visitors"] for r in rows if r["visitors"]} == site.traffic.visitors(
        experiment
    )
    # one interval per treatment arm, overall and in every segment
    intervals = page.evaluate(
        "[...document.querySelectorAll('#forest line.interval')].map((l) => "
        "[l.dataset.group, l.dataset.arm, Number(l.getAttribute('x1')), "
        "Number(l.getAttribute('x2'))])"
    )
    expected = [
        ["all" if g["segment"] is None else g["segment"], c["arm"]]
        for g in [report["overall"], *report["segments"]]
        for c in g["comparisons"]
        if c["conversionLiftCi"]["low"] is not None
    ]
    assert [i[:2] for i in intervals] == expected
    assert all(x1 <= x2 for _, _, x1, x2 in intervals)
    treatments = len(report["arms"]) - 1
    assert len([i for i in intervals if i[0] == "all"]) == treatments


def test_the_group_picker_shows_a_segment(page: Page, site: Site) -> None:
    _select(page, "hero_test")
    report = site.get("/v1/reports/experiments/hero_test")
    segment = report["segments"][0]
    page.evaluate(
        f"(() => {{ const s = document.querySelector('#group'); s.value = "
        f"{json.dumps(segment['segment'])}; s.dispatchEvent(new Event('change')); }})()"
    )
    rows = page.evaluate(TABLE_JS)
    assert [r["visitors"] for r in rows] == [a["visitors"] for a in segment["arms"]]


def test_the_kpi_chart_has_a_line_per_segment(page: Page, site: Site) -> None:
    series = site.get("/v1/reports/kpis?by=segment&bucket=day")
    wait_for(page, "document.querySelectorAll('#kpi-chart polyline.series').length > 0")
    groups = page.evaluate(
        "[...document.querySelectorAll('#kpi-chart polyline.series')].map((p) => p.dataset.group)"
    )
    assert groups == series["groups"]
    points = page.evaluate("document.querySelectorAll('#kpi-chart circle.point').length")
    assert points == len(series["points"])
    page.evaluate(
        "(() => { const s = document.querySelector('#kpi-metric'); s.value = 'visitors';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    wait_for(
        page,
        "[...document.querySelectorAll('#kpi-chart circle.point title')]"
        ".some((t) => t.textContent.includes('visitors'))",
    )


def test_data_is_inserted_as_text(page: Page) -> None:
    _select(page, EVIL_EXPERIMENT)
    assert page.evaluate("document.querySelector('#injected')") is None
    assert page.evaluate("document.querySelectorAll('#arm-table b').length") == 0
    assert page.evaluate("document.querySelector('#title').textContent") == EVIL_EXPERIMENT
    assert page.evaluate(TABLE_JS)[0]["arm"] == EVIL_ARM


def test_nothing_from_another_origin_and_no_errors(rec: Recorder, page: Page, site: Site) -> None:
    origins = {
        urlsplit(r.url)._replace(path="", query="", fragment="").geturl()
        for r in rec.requests
        if not r.url.startswith("data:")
    }
    assert origins == {site.url}
    assert page.evaluate("window.__violations") == []
    errors = [m for m in rec.console if m.startswith(("error", "exception"))]
    assert errors == []
    assert "error" not in page.evaluate("document.querySelector('#status').className")
