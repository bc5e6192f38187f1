"""/metrics of the real app reflects decisions, events and bundle state."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import app_client

MakeRequest = Callable[..., dict[str, object]]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_decisions_events_and_bundle(
    bundle_dir: Path, make_request: MakeRequest
) -> None:
    with app_client(bundle_path=str(bundle_dir)) as c:
        for i in range(3):
            d = c.post("/v1/decide", json=make_request(sessionId=f"m{i}")).json()
        accepted = c.post(
            "/v1/events",
            json={
                "events": [
                    {"type": "impression", "visitorId": "visitor-1", "decisionId": d["decisionId"]},
                    {"type": "click", "visitorId": "visitor-1"},
                ]
            },
        )
        assert accepted.status_code == 202
        c.get("/v1/no-such-route")
        text = c.get("/metrics").text
    samples = _samples(text)
    persona = d["persona"]["id"]
    decided = sum(
        v
        for (name, labels), v in samples.items()
        if name == "tailor_decisions_total" and ("persona", persona) in labels
    )
    assert decided == 3
    assert samples[("tailor_events_total", (("type", "impression"),))] == 1
    assert samples[("tailor_events_total", (("type", "click"),))] == 1
    info = [(labels, v) for (name, labels), v in samples.items() if name == "tailor_bundle_info"]
    assert any(("model_version", d["modelVersion"]) in labels and v == 1 for labels, v in info)
    decide_count = [
        v
        for (name, labels), v in samples.items()
        if name == "tailor_http_request_duration_seconds_count"
        and ("route", "/v1/decide") in labels
    ]
    assert sum(decide_count) == 3
