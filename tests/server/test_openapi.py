"""The OpenAPI document (server/openapi.py), checked on a demo app whose handlers have the shapes
of the real ones: raw ``Request`` in, msgspec decode and encode, problem+json errors.

Only ``/schema/openapi.json`` and the UI's HTML pages are fetched: their JavaScript lives on a CDN
and the network is closed here and in CI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import jsonschema_rs
import msgspec
import pytest
from litestar import Litestar, Request, Response, delete, get, post
from litestar.params import FromPath
from litestar.testing import TestClient
from schemathesis.specs.openapi.definitions import OPENAPI_31

from sdk import Decider
from sdk.schema import (
    Content,
    DecideRequest,
    Decision,
    EventBatch,
    Lifecycle,
    PersonaResult,
    RankedOffer,
    Reason,
    SegmentResult,
    Signals,
    SlotDecision,
    json_schema,
)
from server.openapi import (
    ADMIN_RELOAD_DOCS,
    BUNDLE_DOCS,
    BUNDLE_FILE_DOCS,
    DECIDE_BATCH_DOCS,
    DECIDE_DOCS,
    EVENTS_DOCS,
    VISITOR_DELETE_DOCS,
    VISITOR_GET_DOCS,
    Accepted,
    DecideBatch,
    openapi_config,
    wire_docs,
)
from server.problems import Problem, exception_handlers
from server.security import SecurityMiddleware
from tests.conftest import TEST_SECRET_KEY, security_for_tests

PROBLEM = "application/problem+json"
_encoder = msgspec.json.Encoder()
_decide = msgspec.json.Decoder(DecideRequest)
_batch = msgspec.json.Decoder(DecideBatch)
_events = msgspec.json.Decoder(EventBatch)


# --- a demo app with the shapes of the real handlers -------------------------------------------


def canned_decision(visitor_id: str, slots: list[str]) -> Decision:
    """A valid decision, the same for everyone."""
    return Decision(
        decision_id="0123456789abcdef",
        model_version="demo-1",
        visitor_id=visitor_id,
        session_id=None,
        personalized=True,
        persona=PersonaResult(
            id="researchers", name="Researchers", affinities={"researchers": 1.0}
        ),
        segment=SegmentResult(id=2, distance=0.42),
        lifecycle=Lifecycle(stage="active", rule="lifecycle.default"),
        offers=[RankedOffer(id="free-shipping", name="Free shipping", score=0.61, rank=1)],
        slots={
            slot: SlotDecision(
                variant_id=f"{slot}-default",
                offer_id=None,
                content=Content(type="text", text="Welcome"),
                propensity=1.0,
                reason="default variant",
            )
            for slot in slots
        },
        signals=Signals(
            device_type="desktop",
            os="Windows",
            browser="Chrome",
            touch=False,
            referrer_class="direct",
            referrer_source=None,
            search_terms=None,
            country=None,
            local_hour=12,
            local_weekday=0,
        ),
        reasons=[Reason(code="offer.top", message="free-shipping ranks first")],
    )


async def _body(request: Request[Any, Any, Any]) -> bytes:
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media not in ("application/json", "text/plain"):
        raise Problem(415, "unsupported-media-type", "Unsupported media type", media)
    return await request.body()


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise Problem(422, "invalid-request", "Invalid request", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Problem(400, "malformed-json", "Malformed JSON", str(exc)) from exc


def _json(value: Any, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(value), status_code=status, media_type="application/json")


@post("/v1/decide", status_code=200, **DECIDE_DOCS)
async def decide(request: Request[Any, Any, Any]) -> Response[bytes]:
    visit: DecideRequest = _decode(_decide, await _body(request))
    return _json(canned_decision(visit.visitor_id, visit.slots))


@post("/v1/decide/batch", status_code=200, **DECIDE_BATCH_DOCS)
async def decide_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
    visits: list[DecideRequest] = _decode(_batch, await _body(request))
    return _json([canned_decision(v.visitor_id, v.slots) for v in visits])


@post("/v1/events", status_code=202, **EVENTS_DOCS)
async def events(request: Request[Any, Any, Any]) -> Response[bytes]:
    batch: EventBatch = _decode(_events, await _body(request))
    return _json(Accepted(accepted=len(batch.events)), status=202)


def _visitor_id(value: str) -> str:
    try:
        return msgspec.convert({"visitorId": value}, DecideRequest).visitor_id
    except msgspec.ValidationError as exc:
        raise Problem(400, "invalid-visitor-id", "Invalid visitor id", str(exc)) from exc


@get("/v1/visitors/{visitor_id:str}", **VISITOR_GET_DOCS)
async def get_visitor(visitor_id: FromPath[str]) -> Response[bytes]:
    if not _visitor_id(visitor_id).startswith("known"):
        raise Problem(404, "visitor-not-found", "Visitor not found", "no profile is stored")
    return _json({"visitorId": visitor_id, "pageViews": 3})


@delete("/v1/visitors/{visitor_id:str}", **VISITOR_DELETE_DOCS)
async def delete_visitor(visitor_id: FromPath[str]) -> None:
    _visitor_id(visitor_id)


_ETAG = '"0123abcd"'


@get("/v1/bundle", **BUNDLE_DOCS)
async def bundle(request: Request[Any, Any, Any]) -> Response[bytes]:
    if request.headers.get("if-none-match") == _ETAG:
        return Response(b"", status_code=304, headers={"etag": _ETAG})
    return _json({"modelVersion": "demo-1", "files": {"manifest.json": "0123abcd"}})


@get("/v1/bundle/files/{name:str}", **BUNDLE_FILE_DOCS)
async def bundle_file(name: FromPath[str]) -> Response[bytes]:
    if name != "manifest.json":
        raise Problem(404, "not-found", "Not found", f"the bundle has no file {name!r}")
    return Response(b"{}", media_type="application/octet-stream", headers={"etag": _ETAG})


@post("/v1/admin/reload", status_code=200, **ADMIN_RELOAD_DOCS)
async def reload() -> Response[bytes]:
    return _json({"modelVersion": "demo-1", "changed": False})


#: Sent by every test request: the secret key may call every route.
AUTH = {"authorization": f"Bearer {TEST_SECRET_KEY}"}


def make_demo_app() -> Litestar:
    """A Litestar app documenting every route shape of the decision API with the real config,
    behind the real key check (test keys, no rate limits)."""
    security = msgspec.structs.replace(
        security_for_tests(), per_key_per_minute=0, per_ip_per_minute=0
    )
    return Litestar(
        route_handlers=[
            decide,
            decide_batch,
            events,
            get_visitor,
            delete_visitor,
            bundle,
            bundle_file,
            reload,
        ],
        exception_handlers=exception_handlers,
        request_max_body_size=64 * 1024,
        middleware=[SecurityMiddleware.factory(security)],
        openapi_config=openapi_config(),
        debug=False,
    )


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(make_demo_app()) as c:
        c.headers.update(AUTH)
        yield c


@pytest.fixture(scope="module")
def doc(client: TestClient[Litestar]) -> dict[str, Any]:
    r = client.get("/schema/openapi.json")
    assert r.status_code == 200
    document: dict[str, Any] = r.json()
    return document


def _component(doc: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = doc["components"]["schemas"][name]
    return schema


def _validator(doc: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    """A validator for component ``name`` that resolves the document's other components."""
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema_rs.Draft202012Validator(root)


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for child in node.values():
            yield from _walk(child)
    elif isinstance(node, list):
        for child in node:
            yield from _walk(child)


def _schemas(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every schema object of the document: components and the media types of operations."""
    yield from doc["components"]["schemas"].values()
    for node in _walk(doc["paths"]):
        if isinstance(node, dict) and "schema" in node and isinstance(node["schema"], dict):
            yield node["schema"]


# --- the document ------------------------------------------------------------------------------


def test_document_is_a_valid_openapi_31_document(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    jsonschema_rs.Draft202012Validator(OPENAPI_31).validate(doc)
    for schema in _schemas(doc):  # the OpenAPI meta-schema does not look inside schemas
        jsonschema_rs.meta.validate(schema)


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs = {n["$ref"] for n in _walk(doc) if isinstance(n, dict) and isinstance(n.get("$ref"), str)}
    assert refs, "the wire types are referenced, not inlined"
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref


def test_info_servers_and_tags(doc: dict[str, Any]) -> None:
    assert doc["info"]["title"] == "Tailor decision API"
    assert doc["info"]["version"] == version("tailor")
    assert "problem+json" in doc["info"]["description"]
    assert doc["info"]["license"]["identifier"] == "Apache-2.0"
    assert doc["servers"] == [{"url": "/"}]
    assert {t["name"] for t in doc["tags"]} >= {"decide", "events", "visitors", "admin"}
    operation_ids = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    assert operation_ids == {
        "decide",
        "decideBatch",
        "sendEvents",
        "getVisitor",
        "deleteVisitor",
        "getBundle",
        "getBundleFile",
        "reloadBundle",
    }


def test_wire_schemas_are_the_committed_json_schema(doc: dict[str, Any]) -> None:
    """The OpenAPI components and sdk/data/schema.json come from the same msgspec types."""
    committed = json.dumps(json_schema()["$defs"]).replace("#/$defs/", "#/components/schemas/")
    for name, schema in json.loads(committed).items():
        assert _component(doc, name) == schema, name


def test_decide_documents_body_constraints_and_problems(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/v1/decide"]["post"]
    body = op["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/json", "text/plain"}
    for media in body["content"].values():
        assert media["schema"] == {"$ref": "#/components/schemas/DecideRequest"}
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Decision"}
    for status in ("400", "401", "403", "413", "415", "422", "429", "503"):
        problem = op["responses"][status]["content"][PROBLEM]["schema"]
        assert problem == {"$ref": "#/components/schemas/ProblemDetails"}, status
        assert op["responses"][status]["description"]
    request = _component(doc, "DecideRequest")
    assert request["required"] == ["visitorId"]
    visitor_id = request["properties"]["visitorId"]
    assert visitor_id["pattern"] == r"^[A-Za-z0-9_.:\-]+$"
    assert (visitor_id["minLength"], visitor_id["maxLength"]) == (1, 128)
    assert request["properties"]["slots"]["maxItems"] == 32
    page_views = _component(doc, "Behavior")["properties"]["pageViews"]
    assert {"type": "number", "minimum": 0, "maximum": 1_000_000} in page_views["anyOf"]
    assert {"type": "null"} in page_views["anyOf"]
    decision = _component(doc, "Decision")
    assert {"decisionId", "modelVersion", "visitorId", "slots"} <= set(decision["required"])
    assert all("_" not in name for name in decision["properties"]), "camelCase on the wire"


def test_problem_details_schema(doc: dict[str, Any]) -> None:
    problem = _component(doc, "ProblemDetails")
    assert problem["required"] == ["type", "title", "status", "detail"]
    assert problem["properties"]["status"]["maximum"] == 599
    assert "instance" in problem["properties"]
    assert problem.get("additionalProperties", True) is True, "problem types may add members"


def test_batch_events_visitors_bundle_reload(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    batch = paths["/v1/decide/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/DecideRequest"},
        "maxItems": 100,
    }
    assert batch["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Decision"},
    }
    events = paths["/v1/events"]["post"]
    statuses = {"202", "400", "401", "403", "409", "413", "415", "422", "429"}
    assert set(events["responses"]) == statuses
    accepted = events["responses"]["202"]["content"]["application/json"]["schema"]
    assert accepted == {"$ref": "#/components/schemas/Accepted"}
    event_list = _component(doc, "EventBatch")["properties"]["events"]
    assert (event_list["minItems"], event_list["maxItems"]) == (1, 100)
    visitor = paths["/v1/visitors/{visitor_id}"]
    assert [p["name"] for p in visitor["get"]["parameters"]] == ["visitor_id"]
    assert set(visitor["get"]["responses"]) == {"200", "400", "401", "403", "404", "429"}
    assert visitor["delete"]["responses"]["204"] == {
        "description": "Nothing is stored about the visitor any more"
    }
    assert "requestBody" not in visitor["delete"]
    bundle = paths["/v1/bundle"]["get"]["responses"]
    assert set(bundle) == {"200", "304", "401", "403", "429", "503"}
    assert "content" not in bundle["304"]
    files = paths["/v1/bundle/files/{name}"]["get"]["responses"]
    assert files["200"]["content"] == {"application/octet-stream": {}}
    assert {"404", "409"} <= set(files)
    reload = paths["/v1/admin/reload"]["post"]["responses"]
    assert set(reload) == {"200", "401", "403", "409", "429"}


def test_api_keys_are_documented(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerKey"]["description"],
    }
    assert (schemes["headerKey"]["in"], schemes["headerKey"]["name"]) == ("header", "X-Tailor-Key")
    assert (schemes["queryKey"]["in"], schemes["queryKey"]["name"]) == ("query", "key")
    public = [{"bearerKey": []}, {"headerKey": []}, {"queryKey": []}]
    secret = [{"bearerKey": []}, {"headerKey": []}]
    paths = doc["paths"]
    for path, method in [("/v1/decide", "post"), ("/v1/events", "post")]:
        assert paths[path][method]["security"] == public, path
    for path, method in [
        ("/v1/decide/batch", "post"),
        ("/v1/bundle", "get"),
        ("/v1/bundle/files/{name}", "get"),
        ("/v1/visitors/{visitor_id}", "get"),
        ("/v1/visitors/{visitor_id}", "delete"),
        ("/v1/admin/reload", "post"),
    ]:
        assert paths[path][method]["security"] == secret, path


def test_cdn_documentation_pages_are_off_by_default(client: TestClient[Litestar]) -> None:
    for path in ("/schema/scalar", "/schema/swagger"):
        assert client.get(path).status_code == 404, path
    assert client.get("/schema/openapi.json").status_code == 200


def test_documentation_pages_are_served_when_enabled() -> None:
    app = Litestar(
        route_handlers=[decide], openapi_config=openapi_config(interactive=True), debug=False
    )
    with TestClient(app) as c:
        for path in ("/schema", "/schema/scalar", "/schema/swagger"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith("text/html")
            assert "<title>Tailor decision API" in r.text


# --- the documented schemas describe what the server sends -------------------------------------


def test_real_decisions_validate_against_the_document(
    doc: dict[str, Any], decider: Decider, make_request: Any
) -> None:
    validator = _validator(doc, "Decision")
    for overrides in ({}, {"consent": {}}, {"slots": ["hero", "nope"]}):
        visit = msgspec.json.decode(
            msgspec.json.encode(make_request(**overrides)), type=DecideRequest
        )
        validator.validate(msgspec.to_builtins(decider.decide(visit)))
    request_validator = _validator(doc, "DecideRequest")
    request_validator.validate(make_request())
    assert not request_validator.is_valid(make_request(visitorId="has space"))
    assert not request_validator.is_valid(make_request(behavior={"pageViews": 1e12}))


def test_demo_answers_match_the_document(doc: dict[str, Any], client: TestClient[Litestar]) -> None:
    r = client.post("/v1/decide", json={"visitorId": "v-1", "slots": ["hero"]})
    assert r.status_code == 200
    _validator(doc, "Decision").validate(r.json())
    r = client.post("/v1/decide", content=b'{"visitorId": 1}')
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    _validator(doc, "ProblemDetails").validate(r.json())
    r = client.post("/v1/events", json={"events": [{"type": "click", "visitorId": "v"}]})
    assert r.status_code == 202 and r.json() == {"accepted": 1}
    _validator(doc, "Accepted").validate(r.json())


def test_unsupported_types_fail_when_documented() -> None:
    class NotWire:
        pass

    with pytest.raises(TypeError):
        wire_docs(operation_id="x", summary="x", request=NotWire)
