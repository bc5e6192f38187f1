"""server.batcher: the fresh decides of one event-loop turn are decided back to back, each
getting exactly the decision it would get alone; a failing request fails alone; a live server
counts them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_export.inputs.synth import generate
from sdk import Bundle, Decider
from sdk.features import FeatureRow
from sdk.schema import DecideRequest, Decision
from server.batcher import DecideBatcher
from tests.conftest import LiveServer, start_refused

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
REQUESTS = [v.request for v in generate(40, seed=18)]


def _decider(bundle: Bundle, cls: type[Decider] = Decider) -> Decider:
    ids = itertools.count()
    return cls(bundle, clock=lambda: NOW, new_id=lambda: f"d{next(ids)}")


def _plain(decision: Decision) -> bytes:
    """A decision without its id (ids are drawn in call order), as JSON."""
    return msgspec.json.encode(msgspec.structs.replace(decision, decision_id=""))


def _alone(decider: Decider, requests: list[DecideRequest]) -> list[tuple[bytes, FeatureRow]]:
    out = []
    for req in requests:
        rows: list[FeatureRow] = []
        out.append((_plain(decider.decide(req, rows=rows)), rows[0]))
    return out


async def _together(
    batcher: DecideBatcher, decider: Decider, requests: list[DecideRequest]
) -> list[Any]:
    """Every request's decide started in one loop turn (as concurrent handlers reach it)."""
    return await asyncio.gather(
        *(
            batcher.decide(decider, r, profile=None, suppressed=frozenset(), sticky=None)
            for r in requests
        ),
        return_exceptions=True,
    )


def test_one_turn_is_one_batch_and_each_request_gets_its_own_decision(bundle: Bundle) -> None:
    decider = _decider(bundle)
    sizes: list[int] = []
    batcher = DecideBatcher(32, sizes.append)
    got = asyncio.run(_together(batcher, decider, REQUESTS[:12]))
    assert sizes == [12] and (batcher.batches, batcher.decided) == (1, 12)
    want = _alone(_decider(bundle), REQUESTS[:12])
    assert [(_plain(d), row) for d, row in got] == want
    assert len({d.decision_id for d, _ in got}) == 12


def test_the_limit_splits_a_turn_into_batches(bundle: Bundle) -> None:
    sizes: list[int] = []
    batcher = DecideBatcher(5, sizes.append)
    got = asyncio.run(_together(batcher, _decider(bundle), REQUESTS[:12]))
    assert sizes == [5, 5, 2]
    assert [(_plain(d), row) for d, row in got] == _alone(_decider(bundle), REQUESTS[:12])


def test_limit_one_decides_each_request_alone(bundle: Bundle) -> None:
    sizes: list[int] = []
    batcher = DecideBatcher(1, sizes.append)
    got = asyncio.run(_together(batcher, _decider(bundle), REQUESTS[:6]))
    assert sizes == [1] * 6
    assert [(_plain(d), row) for d, row in got] == _alone(_decider(bundle), REQUESTS[:6])
    with pytest.raises(ValueError):
        DecideBatcher(0)


def test_requests_of_different_turns_are_not_held_for_each_other(bundle: Bundle) -> None:
    sizes: list[int] = []
    batcher = DecideBatcher(32, sizes.append)
    decider = _decider(bundle)

    async def one_by_one() -> None:
        for r in REQUESTS[:4]:
            await batcher.decide(decider, r, profile=None, suppressed=frozenset(), sticky=None)

    asyncio.run(one_by_one())
    assert sizes == [1, 1, 1, 1]


class _Failing(Decider):
    """A real decider that fails on one visitor (fault injection)."""

    BAD = REQUESTS[3].visitor_id

    def decide(self, request: DecideRequest, **kwargs: Any) -> Decision:
        if request.visitor_id == self.BAD:
            raise RuntimeError("cannot decide this visit")
        return super().decide(request, **kwargs)


def test_a_failing_request_fails_alone(bundle: Bundle) -> None:
    sizes: list[int] = []
    batcher = DecideBatcher(32, sizes.append)
    got = asyncio.run(_together(batcher, _decider(bundle, _Failing), REQUESTS[:6]))
    assert isinstance(got[3], RuntimeError) and "this visit" in str(got[3])
    fine = [g for i, g in enumerate(got) if i != 3]
    want = _alone(_decider(bundle), [r for i, r in enumerate(REQUESTS[:6]) if i != 3])
    assert [(_plain(d), row) for d, row in fine] == want
    assert sizes == [6]


def test_a_cancelled_request_drops_out_of_its_batch(bundle: Bundle) -> None:
    sizes: list[int] = []
    batcher = DecideBatcher(32, sizes.append)
    decider = _decider(bundle)

    async def main() -> list[Any]:
        tasks = [
            asyncio.ensure_future(
                batcher.decide(decider, r, profile=None, suppressed=frozenset(), sticky=None)
            )
            for r in REQUESTS[:3]
        ]
        await asyncio.sleep(0)  # every task has joined the batch
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    got = asyncio.run(main())
    assert isinstance(got[1], asyncio.CancelledError)
    assert sizes == [2]
    assert [_plain(got[0][0]), _plain(got[2][0])] == [
        d for d, _ in _alone(_decider(bundle), [REQUESTS[0], REQUESTS[2]])
    ]


def test_each_decider_of_a_turn_decides_its_own_requests(bundle: Bundle) -> None:
    """A bundle reload swaps the decider: requests of one turn may hold either."""
    sizes: list[int] = []
    batcher = DecideBatcher(32, sizes.append)
    old, new = _decider(bundle), _decider(bundle)  # each numbers its decisions d0, d1...

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(
                batcher.decide(
                    old if i % 2 else new, r, profile=None, suppressed=frozenset(), sticky=None
                )
                for i, r in enumerate(REQUESTS[:6])
            )
        )

    got = asyncio.run(main())
    assert sorted(sizes) == [3, 3]
    assert {d.decision_id for d, _ in got[1::2]} == {"d0", "d1", "d2"}  # by the old one
    assert {d.decision_id for d, _ in got[0::2]} == {"d0", "d1", "d2"}  # by the new one
    assert [_plain(d) for d, _ in got] == [d for d, _ in _alone(_decider(bundle), REQUESTS[:6])]


def _batch_metric(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("tailor_decide_batch_size")
    }
    return values.get("tailor_decide_batch_size_count", 0.0), values.get(
        "tailor_decide_batch_size_sum", 0.0
    )


def test_a_live_server_decides_concurrent_fresh_visits_through_the_batcher(
    live_server: LiveServer, make_request: Callable[..., dict[str, object]]
) -> None:
    concurrent_bodies = [
        make_request(visitorId=f"batch-v{i}", sessionId=f"batch-s{i}") for i in range(24)
    ]
    batches_before, decided_before = _batch_metric(live_server.url)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/v1/decide", json=body) for body in concurrent_bodies)
            )

    answers = asyncio.run(fire())
    assert [a.status_code for a in answers] == [200] * len(concurrent_bodies)
    decisions = [a.json() for a in answers]
    assert [d["sessionId"] for d in decisions] == [b["sessionId"] for b in concurrent_bodies]
    assert len({d["decisionId"] for d in decisions}) == len(concurrent_bodies)
    batches_after, decided_after = _batch_metric(live_server.url)
    # every fresh decide went through the batcher, in at most one batch each
    assert decided_after - decided_before == len(concurrent_bodies)
    assert 1 <= batches_after - batches_before <= len(concurrent_bodies)


def test_the_batch_limit_comes_from_the_environment_and_bad_values_name_their_variable() -> None:
    from server.settings import Settings

    assert Settings.from_env({"TAILOR_DECIDE_BATCH": "4"}).decide_batch == 4
    assert Settings.from_env({}).decide_batch == 32
    with pytest.raises(ValueError, match=r"TAILOR_DECIDE_BATCH must be a number, got 'many'"):
        Settings.from_env({"TAILOR_DECIDE_BATCH": "many"})
    with pytest.raises(ValueError, match=r"^TAILOR_DECIDE_BATCH: Expected `int` >= 1"):
        Settings.from_env({"TAILOR_DECIDE_BATCH": "0"})
    with pytest.raises(ValueError, match=r"^TAILOR_MAX_VISITORS must be a number"):
        Settings.from_env({"TAILOR_MAX_VISITORS": "1e3x"})


@pytest.mark.parametrize(
    ("value", "said"),
    [("many", "TAILOR_DECIDE_BATCH must be a number"), ("1000", "TAILOR_DECIDE_BATCH: Expected")],
)
def test_the_server_refuses_to_start_on_a_bad_batch_limit_with_one_clear_line(
    bundle_dir: Path, tmp_path: Path, value: str, said: str
) -> None:
    env = {
        "TAILOR_DEMO": "1",
        "TAILOR_EVENT_LOG_DIR": str(tmp_path / "events"),
        "TAILOR_DECIDE_BATCH": value,
    }
    done = start_refused(bundle_dir, env)
    assert done.returncode == 2
    assert f"refusing to start: {said}" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout
