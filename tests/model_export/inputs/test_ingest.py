"""Ingest: formats, folders, time zones, reject reasons and the report, against planted truth."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from model_export.inputs.config import (
    Columns,
    DataConfig,
    EventColumns,
    TrainingConfig,
    TraitsConfig,
    TransactionColumns,
)
from model_export.inputs.ingest import (
    EVENT_REASONS,
    TRANSACTION_REASONS,
    ColumnError,
    IngestError,
    IngestResult,
    parse_timestamps,
    read_all,
    read_events,
    read_traits,
    read_transactions,
    summarize,
)
from model_export.inputs.synth_shop import ShopExport, generate_shop
from tests.model_export.conftest import messy_shop

NOW = datetime(2026, 6, 1, tzinfo=UTC)
COLUMNS = Columns(
    transactions=TransactionColumns(
        customer_id="cust", order_id="oid", timestamp="when", amount="amt", category="cat"
    )
)
HEADER = "cust,oid,when,amt,cat\n"


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> ShopExport:
    """A messy export: mixed formats in folders, mixed time-zone styles, every bad row kind."""
    return messy_shop(tmp_path_factory.mktemp("messy"), 500)


@pytest.fixture(scope="module")
def messy_read(messy: ShopExport) -> dict[str, IngestResult]:
    return read_all(messy.config, now=messy.now)


@pytest.fixture
def tx_config(tmp_path: Path) -> Callable[..., TrainingConfig]:
    """Config factory over CSV text written to ``tmp_path/tx`` (one file per keyword arg)."""

    def make(*, tz: str = "UTC", formats: list[str] | None = None, **files: str) -> TrainingConfig:
        folder = tmp_path / "tx"
        folder.mkdir(exist_ok=True)
        for name, text in files.items():
            (folder / name.replace("_", ".")).write_text(text, encoding="utf-8")
        data = DataConfig(transactions=str(folder), timezone=tz, date_formats=formats or [])
        return TrainingConfig(data=data, columns=COLUMNS)

    return make


# --- the messy export: counts equal what was injected -----------------------------------------


def test_reject_counts_equal_the_injected_counts_exactly(
    messy: ShopExport, messy_read: dict[str, IngestResult]
) -> None:
    for kind in ("transactions", "events", "traits"):
        assert messy_read[kind].report.rejected == messy.injected[kind], kind
    assert set(messy.injected["transactions"]) == set(TRANSACTION_REASONS)
    assert set(messy.injected["events"]) == set(EVENT_REASONS)


def test_messy_export_accepts_exactly_the_clean_rows(
    messy: ShopExport, messy_read: dict[str, IngestResult]
) -> None:
    tx = messy_read["transactions"].frame.sort("order_id")
    assert_frame_equal(tx, messy.transactions)
    events = messy_read["events"].frame
    keys = ["ts", "session_id", "type", "url"]
    assert_frame_equal(events.sort(keys, nulls_last=True), messy.events.sort(keys, nulls_last=True))
    assert_frame_equal(
        messy_read["traits"].frame.sort("customer_id"), messy.traits.sort("customer_id")
    )


def test_report_rows_add_up_and_examples_point_at_rows(
    messy_read: dict[str, IngestResult],
) -> None:
    for result in messy_read.values():
        report = result.report
        counted = sum(n for r, n in report.rejected.items() if r != "unreadable_file")
        assert report.rows_read == report.rows_accepted + counted
        assert report.rows_accepted == result.frame.height
        assert set(report.examples) == set(report.rejected)
        for reason, examples in report.examples.items():
            assert 1 <= len(examples) <= min(3, report.rejected[reason])
            for example in examples:
                pattern = r"^[\w./-]+: " if reason == "unreadable_file" else r"^[\w./-]+:\d+"
                assert re.match(pattern, example), example


def test_corrupt_file_is_reported_and_the_others_read(
    messy: ShopExport, messy_read: dict[str, IngestResult]
) -> None:
    report = messy_read["transactions"].report
    assert report.rejected["unreadable_file"] == 1
    assert report.examples["unreadable_file"][0].startswith("part-999.parquet: ")
    assert report.files == [f.removeprefix("transactions/") for f in messy.files["transactions"]]
    assert {Path(f).suffix for f in report.files} == {".csv", ".jsonl", ".parquet"}


def test_summary_is_json_ready_and_totals_add_up(messy_read: dict[str, IngestResult]) -> None:
    summary = summarize(messy_read)
    msgspec.json.encode(summary)  # the manifest can hold it
    assert set(summary) == {"transactions", "events", "traits", "total"}
    tx = summary["transactions"]
    frame = messy_read["transactions"].frame
    assert tx["orders"] == frame.height
    assert tx["customers"] == frame["customer_id"].n_unique()
    assert tx["revenue"] == pytest.approx(frame["amount"].sum(), abs=0.01)
    assert datetime.fromisoformat(tx["last"]) == frame["ts"].max()
    assert sum(summary["events"]["types"].values()) == messy_read["events"].frame.height
    total = summary["total"]
    assert total["rows_accepted"] == sum(r.report.rows_accepted for r in messy_read.values())
    assert total["rejected"]["missing_customer_id"] == (
        messy_read["transactions"].report.rejected["missing_customer_id"]
        + messy_read["traits"].report.rejected["missing_customer_id"]
    )
    with pytest.raises(ValueError, match="two transactions"):
        summarize([messy_read["transactions"], messy_read["transactions"]])


# --- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("mixed_timezones", [False, True])
def test_every_format_reads_back_the_truth(tmp_path: Path, fmt: str, mixed_timezones: bool) -> None:
    shop = generate_shop(
        tmp_path,
        customers=120,
        seed=3,
        fmt=fmt,
        mixed_timezones=mixed_timezones,  # type: ignore[arg-type]
    )
    results = read_all(shop.config, now=shop.now)
    assert all(not r.report.rejected for r in results.values())
    assert_frame_equal(results["transactions"].frame.sort("order_id"), shop.transactions)
    keys = ["ts", "session_id", "type", "url"]
    assert_frame_equal(
        results["events"].frame.sort(keys, nulls_last=True),
        shop.events.sort(keys, nulls_last=True),
    )


def test_a_mixed_folder_reads_every_part(tmp_path: Path) -> None:
    shop = generate_shop(tmp_path, customers=150, seed=4, fmt="mixed", files=4)
    result = read_transactions(shop.config, now=shop.now)
    assert result.report.files == [
        "part-000.csv",
        "part-001.jsonl",
        "part-002.parquet",
        "part-003.csv",
    ]
    assert_frame_equal(result.frame.sort("order_id"), shop.transactions)


def test_naive_offset_and_z_timestamps_land_on_the_same_instant(
    tx_config: Callable[..., TrainingConfig],
) -> None:
    rows = [
        "2026-03-01T13:22:05Z",
        "2026-03-01T13:22:05.000z",
        "2026-03-01 14:22:05+01:00",
        "2026-03-01T08:22:05-0500",
        "2026-03-01 14:22:05",  # naive: Europe/Berlin wall time
        "2026-03-01T14:22:05",
        "01/03/2026 14:22:05",  # day-first, from date_formats
        "1772371325",  # epoch seconds
        "1772371325000",  # epoch milliseconds
    ]
    text = HEADER + "".join(f"c{i},o{i},{ts},1,\n" for i, ts in enumerate(rows))
    config = tx_config(tz="Europe/Berlin", formats=["%d/%m/%Y %H:%M:%S"], a_csv=text)
    result = read_transactions(config, now=NOW)
    assert result.report.rejected == {}
    assert result.frame["ts"].to_list() == [datetime(2026, 3, 1, 13, 22, 5, tzinfo=UTC)] * len(rows)


def test_dst_fold_takes_the_earlier_instant_and_a_gap_is_unparseable() -> None:
    values = pl.Series(["2026-10-25 02:30:00", "2026-03-29 02:30:00", "2026-07-01"])
    parsed = parse_timestamps(values, "Europe/Berlin").to_list()
    assert parsed == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # CEST, the first of the two 02:30s
        None,  # 02:30 does not exist on the spring-forward day
        datetime(2026, 6, 30, 22, 0, tzinfo=UTC),
    ]


def test_native_datetimes_and_epoch_numbers() -> None:
    naive = pl.Series([datetime(2026, 1, 1, 12)], dtype=pl.Datetime("ms"))  # noqa: DTZ001
    assert parse_timestamps(naive, "Europe/Berlin").to_list() == [
        datetime(2026, 1, 1, 11, tzinfo=UTC)
    ]
    aware = pl.Series([datetime(2026, 1, 1, 12, tzinfo=UTC)]).dt.convert_time_zone("Asia/Tokyo")
    assert parse_timestamps(aware, "Europe/Berlin").to_list() == [
        datetime(2026, 1, 1, 12, tzinfo=UTC)
    ]
    epochs = pl.Series([1_772_371_325, 1_772_371_325_000, 1_772_371_325_000_000, 0, 20260301])
    assert parse_timestamps(epochs).to_list() == [
        datetime(2026, 3, 1, 13, 22, 5, tzinfo=UTC)
    ] * 3 + [
        None,  # a 0 placeholder is not an order time
        None,  # a compact yyyymmdd is not an epoch
    ]


# --- reject reasons -----------------------------------------------------------------------------


def test_each_bad_row_is_counted_once_with_its_first_reason(
    tx_config: Callable[..., TrainingConfig],
) -> None:
    text = HEADER + (
        "C1,O1,2026-03-01T10:00:00Z,10.5,Electronics\n"
        ",O2,2026-03-01T10:00:00Z,1,\n"  # missing customer
        "C2,,2026-03-01T10:00:00Z,1,\n"  # missing order id
        "C2,O3,yesterday,-1,\n"  # unparseable timestamp (checked before the amount)
        "C2,O4,2026-09-01T00:00:00Z,1,\n"  # future (now + 1 day)
        "C2,O5,2026-03-01T10:00:00Z,ten,\n"  # unparseable amount
        "C2,O6,2026-03-01T10:00:00Z,-3,\n"  # negative
        "C2,O7,2026-03-01T10:00:00Z,1e9,\n"  # absurd (> max_amount)
        'C3,O8,2026-03-01T10:00:00Z,"1,234.50", Home \n'  # fine: thousands separator
        "17850.0,O9,2026-03-01T10:00:00Z,12\u20ac,\n"  # fine: float-looking id, currency sign
    )
    result = read_transactions(tx_config(a_csv=text), now=NOW)
    assert result.report.rejected == {
        "missing_customer_id": 1,
        "missing_order_id": 1,
        "unparseable_timestamp": 1,
        "future_timestamp": 1,
        "unparseable_amount": 1,
        "negative_amount": 1,
        "absurd_amount": 1,
    }
    assert result.report.examples["unparseable_timestamp"] == ["a.csv:4 'yesterday'"]
    assert result.report.examples["missing_customer_id"] == ["a.csv:2"]
    frame = result.frame
    assert frame["order_id"].to_list() == ["O1", "O8", "O9"]
    assert frame["amount"].to_list() == [10.5, 1234.5, 12.0]
    assert frame["category"].to_list() == ["electronics", "home", None]
    assert frame["customer_id"].to_list() == ["C1", "C3", "17850"]


def test_cutoff_rejects_later_rows_as_future(tx_config: Callable[..., TrainingConfig]) -> None:
    text = HEADER + "C1,O1,2026-03-01T10:00:00Z,1,\nC1,O2,2026-03-02T10:00:00Z,1,\n"
    cutoff = datetime(2026, 3, 2, tzinfo=UTC)
    result = read_transactions(tx_config(a_csv=text), now=NOW, cutoff=cutoff)
    assert result.report.rejected == {"future_timestamp": 1}
    assert result.frame["order_id"].to_list() == ["O1"]


def test_duplicate_order_ids_keep_the_first_in_reading_order(
    tx_config: Callable[..., TrainingConfig],
) -> None:
    first = HEADER + "C1,O1,2026-03-01T10:00:00Z,10,\nC1,O1,2026-03-01T10:00:00Z,11,\n"
    second = HEADER + "C2,O1,2026-03-02T10:00:00Z,12,\nC2,O2,2026-03-02T10:00:00Z,13,\n"
    result = read_transactions(tx_config(a_csv=first, b_csv=second), now=NOW)
    assert result.report.rejected == {"duplicate_order_id": 2}
    assert result.report.examples["duplicate_order_id"] == ["a.csv:2 'O1'", "b.csv:1 'O1'"]
    assert result.frame.select("customer_id", "order_id", "amount").rows() == [
        ("C1", "O1", 10.0),
        ("C2", "O2", 13.0),
    ]


def test_order_lines_keep_every_row_of_an_order(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(
        HEADER + "C1,O1,2026-03-01T10:00:00Z,10,a\nC1,O1,2026-03-01T10:00:00Z,5,b\n"
    )
    data = DataConfig(transactions=str(tmp_path / "t.csv"), order_lines=True)
    result = read_transactions(TrainingConfig(data=data, columns=COLUMNS), now=NOW)
    assert result.report.rejected == {}
    assert result.frame["amount"].to_list() == [10.0, 5.0]


def test_without_an_order_id_column_each_row_is_an_order(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("c,t,a\nC1,2026-03-01,1\nC1,2026-03-01,1\n")
    cols = TransactionColumns(customer_id="c", order_id=None, timestamp="t", amount="a")
    data = DataConfig(transactions=str(tmp_path / "t.csv"))
    result = read_transactions(
        TrainingConfig(data=data, columns=Columns(transactions=cols)), now=NOW
    )
    assert result.frame["order_id"].to_list() == ["t.csv#1", "t.csv#2"]


def test_malformed_records_cost_only_themselves(tmp_path: Path) -> None:
    folder = tmp_path / "tx"
    folder.mkdir()
    (folder / "a.csv").write_text(
        HEADER + "C1,O1,2026-03-01,1,\nC1,O2,2026-03-01,1,,extra,fields\nC1,O3,2026-03-01,1,\n"
    )
    (folder / "b.jsonl").write_text(
        '{"cust": "C2", "oid": "O4", "when": "2026-03-01", "amt": 2}\n'
        '{"cust": "C2", "oid": "O5", "when": \n'
        "[1, 2]\n"
        '{"cust": "C2", "oid": "O6", "when": 1772371325, "amt": "3"}\n'
    )
    data = DataConfig(transactions=str(folder))
    result = read_transactions(TrainingConfig(data=data, columns=COLUMNS), now=NOW)
    assert result.report.rejected == {"malformed_row": 3}
    assert result.report.examples["malformed_row"] == ["a.csv:2", "b.jsonl:2", "b.jsonl:3"]
    assert result.frame["order_id"].to_list() == ["O1", "O3", "O4", "O6"]
    assert result.report.rows_read == 7


def test_unsupported_and_hidden_files_are_listed_or_skipped(
    tx_config: Callable[..., TrainingConfig], tmp_path: Path
) -> None:
    config = tx_config(a_csv=HEADER + "C1,O1,2026-03-01,1,\n", notes_txt="hello")
    (tmp_path / "tx" / ".hidden.csv").write_text("garbage")
    result = read_transactions(config, now=NOW)
    assert result.report.files == ["a.csv"]
    assert result.report.ignored_files == ["notes.txt"]


# --- config errors ------------------------------------------------------------------------------


def test_a_column_named_in_the_config_but_in_no_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("customer_id,order_id,timestamp,total\nC1,O1,2026-03-01,1\n")
    data = DataConfig(transactions=str(tmp_path / "t.csv"))
    with pytest.raises(ColumnError, match=r"'amount'.*\[columns\.transactions\]"):
        read_transactions(TrainingConfig(data=data), now=NOW)


def test_a_column_missing_from_one_file_makes_that_file_unreadable(
    tx_config: Callable[..., TrainingConfig],
) -> None:
    config = tx_config(
        a_csv=HEADER + "C1,O1,2026-03-01,1,\n", b_csv="cust,oid,when,price\nC2,O2,2026-03-01,1\n"
    )
    result = read_transactions(config, now=NOW)
    assert result.report.rejected == {"unreadable_file": 1}
    assert "no column 'amt'" in result.report.examples["unreadable_file"][0]
    assert result.frame["order_id"].to_list() == ["O1"]


def test_an_optional_column_missing_from_one_file_is_null_there(
    tx_config: Callable[..., TrainingConfig],
) -> None:
    config = tx_config(
        a_csv=HEADER + "C1,O1,2026-03-01,1,Home\n", b_csv="cust,oid,when,amt\nC2,O2,2026-03-01,1\n"
    )
    result = read_transactions(config, now=NOW)
    assert result.report.rejected == {}
    assert result.frame["category"].to_list() == ["home", None]


def test_missing_trait_column_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "crm.csv").write_text("customer_id,tier\nC1,gold\n")
    data = DataConfig(transactions=str(tmp_path), traits=str(tmp_path / "crm.csv"))
    config = TrainingConfig(data=data, traits=TraitsConfig(use=["tier", "age"]))
    with pytest.raises(ColumnError, match="'age'"):
        read_traits(config)


def test_bad_paths_and_zones_are_ingest_errors(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        read_transactions(TrainingConfig(data=DataConfig(transactions=str(tmp_path / "x"))))
    with pytest.raises(IngestError, match=r"no \.csv"):
        read_transactions(TrainingConfig(data=DataConfig(transactions=str(tmp_path))))
    (tmp_path / "t.csv").write_text(HEADER)
    with pytest.raises(IngestError, match="Mars/Olympus"):
        read_transactions(
            TrainingConfig(data=DataConfig(transactions=str(tmp_path), timezone="Mars/Olympus"))
        )
    with pytest.raises(IngestError, match=r"data\.events is not set"):
        read_events(TrainingConfig(data=DataConfig(transactions=str(tmp_path))))


# --- events and traits --------------------------------------------------------------------------


def test_events_reject_unknown_types_and_default_columns_may_be_absent(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text(
        '{"visitorId": "v1", "type": "PageView", "timestamp": "2026-03-01T10:00:00Z"}\n'
        '{"visitorId": "v1", "type": "hover", "timestamp": "2026-03-01T10:00:01Z"}\n'
        '{"visitorId": "v1", "type": "impression", "timestamp": "2026-03-01T10:00:02Z",'
        ' "offerId": "o", "propensity": 0}\n'
        '{"visitorId": "v1", "type": "conversion", "timestamp": "2026-03-01T10:00:03Z",'
        ' "offerId": "o", "value": "12.5"}\n'
    )
    data = DataConfig(transactions=str(tmp_path), events=str(tmp_path / "e.jsonl"))
    result = read_events(TrainingConfig(data=data), now=NOW)
    assert result.report.rejected == {"unknown_event_type": 1, "invalid_propensity": 1}
    assert result.report.examples["unknown_event_type"] == ["e.jsonl:2 'hover'"]
    frame = result.frame
    assert frame["type"].to_list() == ["pageview", "conversion"]
    assert frame["value"].to_list() == [None, 12.5]
    assert frame["url"].to_list() == [None, None]  # no url column: null, not an error


def test_a_renamed_event_column_must_exist(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("visitorId,type,timestamp\nv1,pageview,2026-03-01\n")
    data = DataConfig(transactions=str(tmp_path), events=str(tmp_path / "e.csv"))
    config = TrainingConfig(data=data, columns=Columns(events=EventColumns(url="page_url")))
    with pytest.raises(ColumnError, match="'page_url'"):
        read_events(config, now=NOW)


def test_traits_keep_the_first_row_and_type_numeric_columns(tmp_path: Path) -> None:
    (tmp_path / "crm.csv").write_text(
        "customer_id,tier,age\nC1,gold,41\n,silver,30\nC2,,\nC1,bronze,50\n"
    )
    data = DataConfig(transactions=str(tmp_path), traits=str(tmp_path / "crm.csv"))
    result = read_traits(TrainingConfig(data=data, traits=TraitsConfig(use=["tier", "age"])))
    assert result.report.rejected == {"missing_customer_id": 1, "duplicate_customer_id": 1}
    assert result.frame.schema["age"] == pl.Float64
    assert result.frame.rows() == [("C1", "gold", 41.0), ("C2", None, None)]
