from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from sdk.logs import DecisionRecord, read_log
from server.settings import Settings
from tests.conftest import TEST_ORIGIN, TEST_PUBLIC_KEY, app_client

MakeRequest = Callable[..., dict[str, object]]
ROOT = Path(__file__).resolve().parents[2]
GEO = ROOT / "tests" / "fixtures" / "geo"


@pytest.fixture
def client(bundle_dir: Path) -> Iterator[TestClient]:  # type: ignore[type-arg]
    with app_client(bundle_path=str(bundle_dir)) as c:
        yield c


def _problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status and body["type"].startswith("https://tailor.dev/problems/")
    assert body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


def test_decide_returns_a_decision(client: TestClient, make_request: MakeRequest) -> None:  # type: ignore[type-arg]
    r = client.post("/v1/decide", json=make_request())
    assert r.status_code == 200
    body = r.json()
    assert body["personalized"] is True
    assert set(body["slots"]) == {"hero", "banner", "recommendation"}
    assert r.headers["cache-control"] == "no-store"


def test_text_plain_body_is_accepted(client: TestClient, make_request: MakeRequest) -> None:  # type: ignore[type-arg]
    r = client.post(
        "/v1/decide",
        content=json.dumps(make_request()),
        headers={"content-type": "text/plain;charset=UTF-8"},
    )
    assert r.status_code == 200 and r.json()["visitorId"] == "visitor-1"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "malformed"),
        (b"", 400, "malformed"),
        (b"[]", 422, "Expected `object`"),
        (b'{"visitorId": 12}', 422, "$.visitorId"),
        (b'{"visitorId": "v", "slots": "hero"}', 422, "$.slots"),
        (b'{"visitorId": "v", "behavior": {"cartValue": "lots"}}', 422, "$.behavior.cartValue"),
        (b'{"visitorId": "v", "behavior": {"pageViews": 1e12}}', 422, "$.behavior.pageViews"),
        (b'{"visitorId": "v", "timestamp": "yesterday"}', 422, "$.timestamp"),
        (b'{"sessionId": "s"}', 422, "visitorId"),
        (b'{"visitorId": "v", "context": {"location": {"source": "gps"}}}', 422, "source"),
        (b'{"visitorId": "v", "consent": null}', 422, "$.consent"),
        (b"\xff\xfe{}", 400, "malformed"),
    ],
)
def test_bad_input_is_a_problem_not_a_500(
    client: TestClient,
    body: bytes,
    status: int,
    needle: str,  # type: ignore[type-arg]
) -> None:
    r = client.post("/v1/decide", content=body, headers={"content-type": "application/json"})
    problem = _problem(r, status)
    assert needle.lower() in (str(problem["detail"]) + str(problem["type"])).lower()


def test_oversized_body_is_413(client: TestClient) -> None:  # type: ignore[type-arg]
    body = b'{"visitorId": "v", "pad": "' + b"x" * 70_000 + b'"}'
    _problem(client.post("/v1/decide", content=body), 413)


def test_chunked_oversized_body_is_413(client: TestClient) -> None:  # type: ignore[type-arg]
    def chunks() -> Iterator[bytes]:
        yield b'{"visitorId": "v", "pad": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    _problem(client.post("/v1/decide", content=chunks()), 413)


def test_wrong_media_type_is_415(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.post(
        "/v1/decide", content=b"a=b", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    _problem(r, 415)


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:  # type: ignore[type-arg]
    _problem(client.get("/v1/nope"), 404)
    _problem(client.get("/v1/decide"), 405)


def test_global_privacy_control_turns_personalization_off(
    client: TestClient,
    make_request: MakeRequest,  # type: ignore[type-arg]
) -> None:
    r = client.post("/v1/decide", json=make_request(), headers={"Sec-GPC": "1"})
    assert r.status_code == 200
    assert r.json()["personalized"] is False and r.json()["persona"] is None


BROWSER = {"authorization": f"Bearer {TEST_PUBLIC_KEY}", "origin": TEST_ORIGIN}


def _country(client: TestClient, make_request: MakeRequest, headers: dict[str, str]) -> str:  # type: ignore[type-arg]
    """The country a decision used, for a body claiming France (a new session each call)."""
    ctx = make_request()["context"]
    ctx["location"] = {"country": "FR"}  # type: ignore[index]
    session = f"s-{next(_SESSIONS)}"
    r = client.post(
        "/v1/decide", json=make_request(context=ctx, sessionId=session), headers=headers
    )
    assert r.status_code == 200, r.text
    country: str = r.json()["signals"]["country"]
    return country


_SESSIONS = itertools.count()


def test_trusted_edge_header_sets_country_and_client_location_is_ignored(
    bundle_dir: Path, make_request: MakeRequest
) -> None:
    with app_client(bundle_path=str(bundle_dir), geo_headers=["CF-IPCountry"]) as client:
        assert _country(client, make_request, {**BROWSER, "CF-IPCountry": "JP"}) == "JP"
        # from Europe/London, not the body's "FR"
        assert _country(client, make_request, BROWSER) == "GB"


def test_edge_headers_are_not_trusted_by_default(
    client: TestClient,
    make_request: MakeRequest,  # type: ignore[type-arg]
) -> None:
    # any client can send CF-IPCountry
    assert _country(client, make_request, {**BROWSER, "CF-IPCountry": "JP"}) == "GB"
    # a backend caller with a secret key is trusted with the visitor's location
    assert _country(client, make_request, {}) == "FR"


def test_mmdb_lookup_by_client_ip(bundle_dir: Path, make_request: MakeRequest) -> None:
    settings = Settings(
        bundle_path=str(bundle_dir),
        mmdb_path=str(GEO / "GeoLite2-City-Test.mmdb"),
        trusted_proxy_hops=1,
    )
    req = make_request(context={"timezone": "Asia/Tokyo"}, sessionId=None)  # no per-visit cache
    with app_client(**_explicit(settings)) as c:
        # one trusted proxy: the right-most X-Forwarded-For entry is the visitor
        r = c.post("/v1/decide", json=req, headers={"X-Forwarded-For": "1.2.3.4, 81.2.69.142"})
        assert r.json()["signals"]["country"] == "GB"
        # an address the database does not know falls back to the timezone
        r = c.post("/v1/decide", json=req, headers={"X-Forwarded-For": "10.0.0.1"})
        assert r.json()["signals"]["country"] == "JP"
    settings = Settings(bundle_path=str(bundle_dir), mmdb_path=str(GEO / "GeoLite2-City-Test.mmdb"))
    with app_client(**_explicit(settings)) as c:
        # no trusted proxy: a forged header is ignored
        r = c.post("/v1/decide", json=req, headers={"X-Forwarded-For": "81.2.69.142"})
        assert r.json()["signals"]["country"] == "JP"


def test_health_and_readiness(client: TestClient) -> None:  # type: ignore[type-arg]
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["modelVersion"].startswith("test-")
    # which hashing and decision path the worker runs (compiled here: a compiler was present)
    assert ready.json()["hashing"] == "compiled"
    assert ready.json()["decisionPath"] == "compiled"


def test_tampered_bundle_is_refused_and_not_ready(
    bundle_copy: Path, make_request: MakeRequest
) -> None:
    with (bundle_copy / "segments.onnx").open("ab") as fh:
        fh.write(b"tamper")
    with app_client(bundle_path=str(bundle_copy)) as c:
        assert c.get("/healthz").status_code == 200
        problem = _problem(c.get("/readyz"), 503)
        assert "segments.onnx" in str(problem["detail"])
        problem_503 = _problem(c.post("/v1/decide", json=make_request()), 503)
        for detail in (problem["detail"], problem_503["detail"]):  # no filesystem paths
            assert str(bundle_copy.parent) not in str(detail)


def test_demo_page_only_in_demo_mode(client: TestClient, bundle_dir: Path) -> None:  # type: ignore[type-arg]
    _problem(client.get("/"), 404)
    with app_client(bundle_path=str(bundle_dir), demo=True) as demo:
        page = demo.get("/")
        assert page.status_code == 200 and "data-tailor-slot" in page.text


def test_demo_mode_is_refused_with_keys(bundle_dir: Path) -> None:
    from tests.conftest import security_for_tests

    settings = Settings(bundle_path=str(bundle_dir), demo=True, security=security_for_tests())
    with pytest.raises(ValueError, match=r"demo mode .* cannot run with API keys"):
        settings.security_config()
    assert Settings().demo is False


def test_tag_is_served(client: TestClient) -> None:  # type: ignore[type-arg]
    tag = client.get("/tag/v1/tailor.js")
    assert tag.status_code == 200 and tag.headers["content-type"].startswith("text/javascript")
    etag = tag.headers["etag"]
    assert client.get("/tag/v1/tailor.js", headers={"if-none-match": etag}).status_code == 304


@pytest.mark.parametrize(
    ("accept", "packed"),
    [
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("*", True),
        ("identity", False),
        ("gzip;q=0", False),
        ("", False),
    ],
)
def test_the_tag_is_gzipped_for_clients_that_accept_it(
    client: TestClient,  # type: ignore[type-arg]
    accept: str,
    packed: bool,
) -> None:
    plain = client.get("/tag/v1/tailor.js", headers={"accept-encoding": "identity"})
    r = client.get("/tag/v1/tailor.js", headers={"accept-encoding": accept})
    assert r.status_code == 200 and r.headers["vary"] == "Accept-Encoding"
    assert (r.headers.get("content-encoding") == "gzip") is packed
    assert r.content == plain.content  # the client decodes it back to the same script
    if packed:
        assert int(r.headers["content-length"]) < len(plain.content) / 1.5
        assert r.headers["etag"] != plain.headers["etag"]  # one strong ETag per representation
    again = client.get(
        "/tag/v1/tailor.js", headers={"accept-encoding": accept, "if-none-match": r.headers["etag"]}
    )
    assert again.status_code == 304


def test_settings_from_env_rejects_nonsense() -> None:
    s = Settings.from_env({"TAILOR_BUNDLE": "/b", "TAILOR_GEO_HEADERS": "CF-IPCountry, X-Geo"})
    assert s.bundle_path == "/b" and s.geo_headers == ["CF-IPCountry", "X-Geo"]
    with pytest.raises(Exception, match="max_body_bytes"):
        Settings.from_env({"TAILOR_MAX_BODY_BYTES": "1"})


def _explicit(settings: Settings) -> dict[str, object]:
    """The fields of ``settings`` that differ from the defaults (so test defaults still apply)."""
    default = Settings()
    return {
        f: getattr(settings, f)
        for f in settings.__struct_fields__
        if getattr(settings, f) != getattr(default, f)
    }


def test_absurd_timestamps_are_refused(client: TestClient, make_request: MakeRequest) -> None:  # type: ignore[type-arg]
    for stamp in ("9999-12-31T00:00:00Z", "1970-01-01T00:00:00Z"):
        r = client.post("/v1/decide", json=make_request(timestamp=stamp, sessionId=None))
        assert _problem(r, 422)["detail"].endswith("at `$.timestamp`")  # type: ignore[union-attr]


def test_shutdown_writes_what_the_event_log_buffered(
    bundle_dir: Path, make_request: MakeRequest, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    with app_client(bundle_path=str(bundle_dir), event_log_dir=str(events)) as client:
        answer = client.post("/v1/decide", json=make_request(visitorId="v-shutdown"))
        assert answer.status_code == 200
    # stopped at once, well within the writer's flush interval: the lifespan's close wrote it
    records = list(read_log(events))
    assert [r.decision_id for r in records if isinstance(r, DecisionRecord)] == [
        answer.json()["decisionId"]
    ]
