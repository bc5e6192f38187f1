from __future__ import annotations

import errno
import json
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from model_export.inputs.config import DataConfig, TrainingConfig
from model_export.inputs.ingest import read_events
from sdk.consent import log_policy
from sdk.logs import anonymous_id, visitor_hash
from sdk.schema import (
    Behavior,
    Consent,
    Content,
    Context,
    DecideRequest,
    Decision,
    Event,
    Lifecycle,
    Page,
    PersonaResult,
    RankedOffer,
    SegmentResult,
    Signals,
    SlotDecision,
)
from server.eventlog import EventLog, EventLogError

NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0.0.0 Safari/537.36"
THREAD = "tailor-eventlog-flusher"


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_log(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., EventLog]]:
    """Factory of logs in ``tmp_path/log``, closed after the test."""
    logs: list[EventLog] = []

    def make(**kwargs: Any) -> EventLog:
        kwargs.setdefault("flush_interval", 3600.0)  # the tests flush explicitly
        kwargs.setdefault("clock", clock)
        log = EventLog(tmp_path / "log", **kwargs)
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


def request(visitor: str = "v1", **kwargs: Any) -> DecideRequest:
    values: dict[str, Any] = {
        "visitor_id": visitor,
        "session_id": "s1",
        "user_id": "customer-9",
        "consent": Consent(personalization=True, storage=True),
        "context": Context(
            page=Page(url="https://shop.example/?q=jane.doe@example.com", referrer=None),
            user_agent=UA,
            timezone="Europe/Berlin",
        ),
        "behavior": Behavior(page_views=3, session_count=2, categories_viewed=["books"]),
        "slots": ["hero"],
    }
    values.update(kwargs)
    return DecideRequest(**values)


def decision(decision_id: str = "d1", visitor: str = "v1", propensity: float = 0.8) -> Decision:
    return Decision(
        decision_id=decision_id,
        model_version="m-1",
        visitor_id=visitor,
        session_id="s1",
        personalized=True,
        persona=PersonaResult(id="researchers", name="Researchers", affinities={"a": 1.0}),
        segment=SegmentResult(id=3, distance=0.5),
        lifecycle=Lifecycle(stage="returning", rule="sessions >= 2"),
        offers=[
            RankedOffer(id="offer-a", name="A", score=0.7, rank=1),
            RankedOffer(id="offer-b", name="B", score=0.2, rank=2),
        ],
        slots={
            "hero": SlotDecision(
                variant_id="hero-a",
                offer_id="offer-a",
                content=Content(type="text", text="Hi"),
                propensity=propensity,
                reason="policy",
            )
        },
        signals=Signals(
            device_type="desktop",
            os="Linux",
            browser="Chrome",
            touch=False,
            referrer_class="search",
            referrer_source="google",
            search_terms="jane doe",
            country="DE",
            local_hour=14,
            local_weekday=0,
        ),
        reasons=[],
        experiment={"hero-test": "treatment"},
    )


def event(type_: str = "click", visitor: str = "v1", **kwargs: Any) -> Event:
    return Event(type=type_, visitor_id=visitor, **kwargs)  # type: ignore[arg-type]


def lines(log: EventLog) -> list[dict[str, Any]]:
    return [json.loads(line) for path in log.files() for line in path.read_bytes().splitlines()]


class Fsyncs:
    """Counts os.fsync calls; sets ``done`` once a file's data (not a directory) is synced."""

    def __init__(self) -> None:
        self.count = 0
        self.done = threading.Event()

    def reset(self) -> None:
        self.count = 0
        self.done.clear()


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Fsyncs:
    real = os.fsync
    seen = Fsyncs()

    def counting(fd: int) -> None:
        real(fd)
        seen.count += 1
        if stat.S_ISREG(os.fstat(fd).st_mode):
            seen.done.set()

    monkeypatch.setattr(os, "fsync", counting)
    return seen


# --- batching and durability ---------------------------------------------------------------


def test_appends_are_buffered_and_written_with_one_fsync_per_batch(
    make_log: Callable[..., EventLog], fsyncs: Fsyncs
) -> None:
    log = make_log()
    fsyncs.reset()  # the directory check at construction fsyncs a probe
    for i in range(10):
        log.append_events([event(session_id=f"s{i}")], received_at=NOW)
    assert fsyncs.count == 0 and log.files() == []
    log.flush()
    assert len(lines(log)) == 10
    assert fsyncs.count == 2  # the batch, and the new file's entry
    log.append_events([event(), event()], received_at=NOW)
    log.flush()
    assert fsyncs.count == 3 and len(lines(log)) == 12
    log.flush()  # nothing waiting: no write, no fsync
    assert fsyncs.count == 3


def test_writer_thread_starts_on_first_append_and_stops_on_close(
    make_log: Callable[..., EventLog],
) -> None:
    def writers() -> int:
        return sum(t.name == THREAD for t in threading.enumerate())

    before = writers()
    log = make_log()
    assert writers() == before
    log.append_events([event()], received_at=NOW)
    log.append_events([event()], received_at=NOW)
    assert writers() == before + 1
    log.close()
    assert writers() == before


def test_writer_thread_flushes_every_interval(
    make_log: Callable[..., EventLog], fsyncs: Fsyncs
) -> None:
    log = make_log(flush_interval=0.01)
    fsyncs.reset()
    log.append_events([event()], received_at=NOW)
    assert fsyncs.done.wait(10), "the writer thread never flushed"
    assert lines(log)[0]["type"] == "click"


def test_a_full_batch_wakes_the_writer_before_the_interval(
    make_log: Callable[..., EventLog], fsyncs: Fsyncs
) -> None:
    log = make_log(max_batch=3)  # interval one hour
    fsyncs.reset()
    log.append_events([event(), event()], received_at=NOW)
    assert not fsyncs.done.is_set()
    log.append_events([event()], received_at=NOW)
    assert fsyncs.done.wait(10), "a full batch did not wake the writer"


def test_close_writes_what_is_left_and_later_appends_are_dropped(
    make_log: Callable[..., EventLog],
) -> None:
    log = make_log()
    log.append_events([event(), event()], received_at=NOW)
    log.close()
    assert len(lines(log)) == 2 and log.current is None
    assert not log.files()[0].stat().st_mode & stat.S_IWUSR  # closed files are read-only
    log.append_events([event()], received_at=NOW)
    log.close()  # idempotent
    assert log.dropped == 1 and len(lines(log)) == 2


def test_failed_writes_are_counted_not_raised(
    make_log: Callable[..., EventLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log()
    log.append_events([event(), event(), event()], received_at=NOW)

    def disk_full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "write", disk_full)
        log.flush()
    assert log.dropped == 3 and log.current is None
    log.append_events([event()], received_at=NOW)
    log.flush()  # the disk has room again: a new file
    assert log.dropped == 3 and len(lines(log)) == 1


def test_records_beyond_max_pending_are_dropped(make_log: Callable[..., EventLog]) -> None:
    log = make_log(max_pending=4, max_batch=100)
    log.append_events([event() for _ in range(6)], received_at=NOW)
    log.flush()
    assert log.dropped == 2 and len(lines(log)) == 4


def test_an_unusable_directory_is_a_typed_error_at_construction(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EventLogError, match="not writable"):
        EventLog(blocker / "log")


# --- files and rotation --------------------------------------------------------------------


def test_file_names_carry_time_and_pid(make_log: Callable[..., EventLog]) -> None:
    log = make_log()
    log.append_events([event()], received_at=NOW)
    log.flush()
    assert log.current is not None
    assert log.current.name == f"events-20260615-123000-{os.getpid()}.jsonl"


def test_rotation_by_size_keeps_every_line_in_order(make_log: Callable[..., EventLog]) -> None:
    log = make_log(max_bytes=1000)
    log.append_events([event(session_id=f"s{i}") for i in range(40)], received_at=NOW)
    log.flush()
    files = log.files()
    assert len(files) > 3
    assert all(p.stat().st_size <= 1000 for p in files)
    assert [p.name for p in files[:3]] == [
        f"events-20260615-123000-{os.getpid()}.jsonl",
        f"events-20260615-123000-{os.getpid()}-1.jsonl",
        f"events-20260615-123000-{os.getpid()}-2.jsonl",
    ]  # same second: numbered
    assert [x["sessionId"] for x in lines(log)] == [f"s{i}" for i in range(40)]


def test_rotation_by_age(make_log: Callable[..., EventLog], clock: Clock) -> None:
    log = make_log(max_age=timedelta(hours=1))
    log.append_events([event()], received_at=NOW)
    log.flush()
    first = log.current
    clock.advance(minutes=59)
    log.append_events([event()], received_at=NOW)
    log.flush()
    assert log.current == first
    clock.advance(minutes=1)
    log.flush()  # an aged file is closed even when nothing is waiting
    assert log.current is None
    assert first is not None and not first.stat().st_mode & stat.S_IWUSR
    log.append_events([event()], received_at=NOW)
    log.flush()
    assert log.current is not None and log.current.name.startswith("events-20260615-133000-")
    assert len(log.files()) == 2 and len(lines(log)) == 3


# --- record formats ------------------------------------------------------------------------


def test_decision_records_carry_what_policy_evaluation_needs_and_no_ip_or_user_agent(
    make_log: Callable[..., EventLog],
) -> None:
    log = make_log()
    req = request()
    log.append_decision(decision(), req, profile=Behavior(purchases=2, revenue=80.0))
    log.flush()
    raw = log.files()[0].read_text()
    (record,) = lines(log)
    assert record == {
        "kind": "decision",
        "logVersion": 1,
        "type": "decision",
        "timestamp": "2026-06-15T12:30:00Z",
        "decisionId": "d1",
        "modelVersion": "m-1",
        "visitorId": "v1",
        "sessionId": "s1",
        "userId": "customer-9",
        "consent": {"personalization": True, "storage": True},
        "personalized": True,
        "signals": {
            "deviceType": "desktop",
            "os": "Linux",
            "browser": "Chrome",
            "touch": False,
            "referrerClass": "search",
            "referrerSource": "google",
            "country": "DE",
            "localHour": 14,
            "localWeekday": 0,
        },
        "timezone": "Europe/Berlin",
        "behavior": {
            "pageViews": 3.0,
            "sessionCount": 2.0,
            "categoriesViewed": ["books"],
            "purchases": 2.0,
            "revenue": 80.0,
        },
        "persona": "researchers",
        "segment": 3,
        "lifecycle": "returning",
        "experiment": {"hero-test": "treatment"},
        "offers": [
            {"id": "offer-a", "score": 0.7, "rank": 1},
            {"id": "offer-b", "score": 0.2, "rank": 2},
        ],
        "slots": {"hero": {"variantId": "hero-a", "offerId": "offer-a", "propensity": 0.8}},
    }
    for secret in (UA, "Mozilla", "jane", "example.com", "userAgent", "ip"):
        assert secret not in raw.replace('"experiment"', "")


def test_behaviour_is_not_logged_without_personalization_consent(
    make_log: Callable[..., EventLog],
) -> None:
    log = make_log()
    log.append_decision(decision(), request(consent=Consent(storage=True)))
    log.flush()
    (record,) = lines(log)
    assert "behavior" not in record and record["consent"] == {
        "personalization": False,
        "storage": True,
    }


def test_a_refused_decision_is_counted_not_logged(make_log: Callable[..., EventLog]) -> None:
    log = make_log()
    log.append_decision(decision("d1"), request(consent=Consent()))
    log.append_events(
        [Event(type="click", visitor_id="v1", decision_id="d1", slot="hero")],
        received_at=NOW,
        policy=lambda _visitor: log_policy(Consent()),
    )
    log.flush()
    assert lines(log) == [] and log.withheld == 2 and log.dropped == 0


def test_without_storage_consent_records_are_anonymous(make_log: Callable[..., EventLog]) -> None:
    log = make_log()
    personal = Consent(personalization=True)
    log.append_decision(decision("d1"), request(consent=personal))
    page = "https://shop.example.com/a?token=SECRET123&utm_source=news"
    log.append_events(
        [Event(type="click", visitor_id="v1", decision_id="d1", properties={"url": page})],
        received_at=NOW,
        policy=lambda _visitor: log_policy(personal),
    )
    log.flush()
    made, event = lines(log)
    for record in (made, event):
        assert record["visitorId"] == anonymous_id("d1")
        assert not {"sessionId", "userId", "timezone", "path", "behavior", "url"} & record.keys()
    assert "country" not in made["signals"] and "os" not in made["signals"]


def test_events_are_flat_and_copy_the_remembered_decisions_propensity(
    make_log: Callable[..., EventLog], clock: Clock
) -> None:
    log = make_log()
    log.append_decision(decision("d1"), request())
    received = NOW + timedelta(seconds=30)
    log.append_events(
        [
            event("click", decision_id="d1", slot="hero", timestamp=NOW + timedelta(seconds=20)),
            event("conversion", decision_id="d1", slot="hero", value=42.5, currency="EUR"),
            event("click", visitor="intruder", decision_id="d1", slot="hero"),
            event("click", decision_id="d1", slot="hero", offer_id="offer-z"),
            event("click", decision_id="unknown", slot="hero"),
            event(
                "pageview",
                timestamp=NOW + timedelta(days=1),  # a client clock far ahead
                properties={"category": "books", "url": "https://shop.example/b", "x": "drop"},
            ),
            event("impression", timestamp=datetime(2026, 6, 15, 12, 0)),  # naive: UTC  # noqa: DTZ001
        ],
        received_at=received,
    )
    log.flush()
    _, click, conversion, intruder, other, unknown, pageview, naive = lines(log)
    assert click == {
        "kind": "event",
        "logVersion": 1,
        "type": "click",
        "timestamp": "2026-06-15T12:30:20Z",
        "receivedAt": "2026-06-15T12:30:30Z",
        "visitorId": "v1",
        "userId": "customer-9",
        "decisionId": "d1",
        "slot": "hero",
        "variantId": "hero-a",
        "offerId": "offer-a",
        "propensity": 0.8,
        "timezone": "Europe/Berlin",
    }
    assert conversion["value"] == 42.5 and conversion["currency"] == "EUR"
    assert conversion["timestamp"] == "2026-06-15T12:30:30Z"  # none sent: receipt time
    assert "propensity" not in intruder and "userId" not in intruder
    assert other["offerId"] == "offer-z" and "propensity" not in other
    assert "propensity" not in unknown
    assert pageview["timestamp"] == "2026-06-15T12:30:30Z"
    assert pageview["category"] == "books" and pageview["url"] == "https://shop.example/b"
    assert "x" not in pageview and "properties" not in pageview
    assert naive["timestamp"] == "2026-06-15T12:00:00Z"


def test_decisions_are_remembered_only_for_a_while(
    make_log: Callable[..., EventLog], clock: Clock
) -> None:
    log = make_log(remember_for=timedelta(minutes=10))
    log.append_decision(decision("d1"), request())
    clock.advance(minutes=11)
    log.append_events([event(decision_id="d1", slot="hero")], received_at=clock.now)
    log.flush()
    assert "propensity" not in lines(log)[1]


def test_the_training_reader_reads_the_log(
    make_log: Callable[..., EventLog], tmp_path: Path
) -> None:
    """The real contract: model_export reads the directory with its default column mapping."""
    log = make_log(max_bytes=1500)  # several files
    log.append_decision(decision("d1"), request())
    log.append_decision(decision("d2", visitor="v2", propensity=0.25), request("v2"))
    log.append_events(
        [
            event("impression", decision_id="d1", slot="hero", session_id="s1"),
            event("click", decision_id="d1", slot="hero", session_id="s1"),
            event("conversion", decision_id="d1", slot="hero", value=19.99, session_id="s1"),
            event("not_interested", visitor="v2", decision_id="d2", slot="hero"),
            event("pageview", visitor="v3", properties={"category": "Books"}),
            event("dismiss", visitor="v3", offer_id="offer-b"),
        ],
        received_at=NOW,
    )
    log.append_erasure("v4")
    log.close()
    assert len(log.files()) > 1
    config = TrainingConfig(
        data=DataConfig(transactions=str(tmp_path / "unused.csv"), events=str(tmp_path / "log"))
    )
    result = read_events(config, now=NOW + timedelta(days=1))
    report = result.report
    assert report.rows_accepted == 6
    # decisions and erasure markers share the files but are not events
    assert report.rejected == {"not_an_event": 3}
    frame = result.frame.sort("visitor_id", "type")
    rows = {(r["visitor_id"], r["type"]): r for r in frame.to_dicts()}
    conversion = rows[("v1", "conversion")]
    assert conversion["customer_id"] == "customer-9"
    assert conversion["value"] == pytest.approx(19.99)
    assert conversion["propensity"] == pytest.approx(0.8)
    assert conversion["offer_id"] == "offer-a" and conversion["session_id"] == "s1"
    assert conversion["timezone"] == "Europe/Berlin"
    assert conversion["ts"] == NOW
    assert rows[("v2", "not_interested")]["propensity"] == pytest.approx(0.25)
    assert rows[("v3", "pageview")]["category"] == "books"
    assert rows[("v3", "pageview")]["propensity"] is None
    assert rows[("v3", "dismiss")]["offer_id"] == "offer-b"


# --- erasure -------------------------------------------------------------------------------


def test_purge_visitor_rewrites_closed_files_only(
    make_log: Callable[..., EventLog], clock: Clock
) -> None:
    log = make_log()
    log.append_decision(decision("d1", visitor="gone"), request("gone"))
    log.append_events([event(visitor="gone"), event(visitor="stays")], received_at=NOW)
    log.flush()
    assert log.purge_visitor("gone") == 0  # the file is still being written
    clock.advance(hours=2)
    log.flush()  # closes the aged file
    log.append_events([event(visitor="gone")], received_at=clock.now)
    log.flush()
    assert log.purge_visitor("gone") == 2
    closed, current = log.files()
    assert current == log.current
    assert [json.loads(x)["visitorId"] for x in closed.read_bytes().splitlines()] == ["stays"]
    assert not closed.stat().st_mode & stat.S_IWUSR
    assert [x["visitorId"] for x in lines(log)] == ["stays", "gone"]
    assert log.purge_visitor("gone") == 0
    log.close()
    assert log.purge_visitor("gone") == 1


def test_purge_erased_uses_the_markers_and_keeps_them(
    make_log: Callable[..., EventLog], tmp_path: Path
) -> None:
    log = make_log()
    log.append_events([event(visitor="gone"), event(visitor="stays")], received_at=NOW)
    log.append_erasure("gone")
    log.close()
    marker = lines(log)[-1]
    assert marker == {
        "kind": "erasure",
        "logVersion": 1,
        "type": "erasure",
        "timestamp": "2026-06-15T12:30:00Z",
        "visitorHash": visitor_hash("gone"),
    }
    offline = EventLog(tmp_path / "log")  # the offline job: a log that never appends
    assert offline.purge_erased() == 1
    assert [x.get("visitorId") for x in lines(offline)] == ["stays", None]
    assert offline.purge_erased() == 0


def test_a_torn_last_line_is_purged_by_its_text(
    make_log: Callable[..., EventLog], tmp_path: Path
) -> None:
    log = make_log()
    log.append_events([event(visitor="gone"), event(visitor="stays")], received_at=NOW)
    log.close()
    (path,) = log.files()
    path.chmod(0o640)
    with path.open("ab") as fh:
        fh.write(b'{"kind":"event","type":"click","visitorId":"gone","tim')  # a crash
    path.chmod(0o440)
    assert log.purge_visitor("gone") == 2
    assert b"gone" not in path.read_bytes()


def test_a_forked_child_writes_its_own_file_without_the_parents_buffer(
    make_log: Callable[..., EventLog],
) -> None:
    log = make_log()
    log.append_events([event(visitor="parent")], received_at=NOW)  # buffered, thread running
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: no pytest from here on
        code = 1
        try:
            log.append_events([event(visitor="child")], received_at=NOW)
            log.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.close()
    by_pid = {int(p.stem.split("-")[3]): p for p in log.files()}
    assert set(by_pid) == {os.getpid(), pid}
    assert [json.loads(x)["visitorId"] for x in by_pid[pid].read_bytes().splitlines()] == ["child"]
    parent = [json.loads(x)["visitorId"] for x in by_pid[os.getpid()].read_bytes().splitlines()]
    assert parent == ["parent"]
