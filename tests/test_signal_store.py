"""The signal store: idempotent appends, typed reads filtered by time, customers and bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from forewarn.signals.schema import KINDS
from forewarn.signals.store import AppendResult, SignalStore, bucket_sql, customer_bucket

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def usage_frame(n: int, customers: int = 7, prefix: str = "e") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"{prefix}{i}" for i in range(n)],
            "customer_id": [f"c{i % customers}" for i in range(n)],
            "ts": [T0 + timedelta(hours=i) for i in range(n)],
            "metric": ["data_gb"] * n,
            "value": [float(i) for i in range(n)],
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> SignalStore:
    s = SignalStore(tmp_path / "signals.duckdb")
    yield s
    s.close()


def test_append_is_idempotent_by_event_id(store: SignalStore) -> None:
    batch = usage_frame(100)
    assert store.append("usage", batch) == AppendResult(new=100, duplicate=0)
    assert store.append("usage", batch) == AppendResult(new=0, duplicate=100)
    # a batch repeating ids inside itself stores each once
    twice = pl.concat([usage_frame(10, prefix="x"), usage_frame(10, prefix="x")])
    assert store.append("usage", twice) == AppendResult(new=10, duplicate=10)
    assert store.count("usage") == 110


def test_append_accepts_arrow_and_fills_missing_optional_columns(store: SignalStore) -> None:
    result = store.append("usage", usage_frame(3).to_arrow())
    assert result.new == 3
    frame = store.read("usage")
    assert frame["unit"].null_count() == 3
    assert frame.schema == KINDS["usage"].polars_schema


def test_append_rejects_rows_without_required_columns(store: SignalStore) -> None:
    with pytest.raises(ValueError, match="value"):
        store.append("usage", usage_frame(2).drop("value"))


def test_read_filters_time_range_inclusive(store: SignalStore) -> None:
    store.append("usage", usage_frame(48))
    start, end = T0 + timedelta(hours=10), T0 + timedelta(hours=20)
    frame = store.read("usage", start=start, end=end)
    assert frame.height == 11
    assert frame["ts"].min() == start and frame["ts"].max() == end


def test_read_filters_customers_and_sorts(store: SignalStore) -> None:
    store.append("usage", usage_frame(70))
    frame = store.read("usage", customers=["c3", "c5"])
    assert set(frame["customer_id"]) == {"c3", "c5"}
    assert frame.height == 20
    assert frame.select(["customer_id", "ts"]).equals(
        frame.select(["customer_id", "ts"]).sort(["customer_id", "ts"])
    )
    assert store.read("usage", customers=[]).height == 0


def test_buckets_partition_customers_and_match_python(store: SignalStore) -> None:
    frame = usage_frame(500, customers=50)
    store.append("usage", frame)
    seen: list[str] = []
    for b in range(4):
        part = store.read("usage", bucket=b, n_buckets=4, columns=["customer_id"])
        ids = set(part["customer_id"])
        assert all(customer_bucket(c, 4) == b for c in ids)
        seen += list(ids)
    assert sorted(seen) == sorted(set(frame["customer_id"]))  # every customer in exactly one bucket


def test_bucket_sql_equals_python() -> None:
    ids = [f"cust-{i}" for i in range(200)] + ["", "ünïcode", "a'b"]
    con = duckdb.connect()
    for n in (1, 7, 64):
        got = con.execute(f"SELECT {bucket_sql('x', n)} FROM unnest(?) AS t(x)", [ids]).fetchall()
        assert [g[0] for g in got] == [customer_bucket(i, n) for i in ids]


def test_bucket_needs_both_arguments(store: SignalStore) -> None:
    with pytest.raises(ValueError):
        store.read("usage", bucket=1)


def test_columns_projection_and_unknown_column(store: SignalStore) -> None:
    store.append("usage", usage_frame(5))
    assert store.read("usage", columns=["customer_id", "value"]).columns == ["customer_id", "value"]
    with pytest.raises(KeyError):
        store.read("usage", columns=["nope"])


def test_time_range_and_counts(store: SignalStore) -> None:
    assert store.time_range("usage") is None
    store.append("usage", usage_frame(24))
    assert store.time_range("usage") == (T0, T0 + timedelta(hours=23))
    assert store.counts()["usage"] == 24 and store.counts()["invoice"] == 0


def test_invoice_lines_round_trip(store: SignalStore) -> None:
    lines = [{"code": "roaming", "description": "Roaming", "amount": 61.2, "quantity": 1.0}]
    frame = pl.DataFrame(
        {
            "event_id": ["i1"],
            "customer_id": ["c1"],
            "ts": [T0],
            "invoice_id": ["INV-1"],
            "status": ["issued"],
            "period_start": [T0.date()],
            "period_end": [T0.date()],
            "total": [61.2],
            "lines": [lines],
        },
        schema_overrides={"lines": KINDS["invoice"].polars_schema["lines"]},
    )
    store.append("invoice", frame)
    back = store.read("invoice")
    assert back["lines"].to_list() == [lines]
    assert back.schema == KINDS["invoice"].polars_schema


def test_service_metric_has_no_customer(store: SignalStore) -> None:
    frame = pl.DataFrame(
        {
            "event_id": ["m1", "m2"],
            "ts": [T0, T0],
            "service_id": ["internet", "internet"],
            "region": ["north", "south"],
            "metric": ["error_rate"] * 2,
            "value": [0.1, 0.2],
        }
    )
    assert store.append("service_metric", frame).new == 2
    assert store.read("service_metric")["region"].to_list() == ["north", "south"]
    with pytest.raises(ValueError):
        store.read("service_metric", bucket=0, n_buckets=2)


def test_persists_and_opens_read_only(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    s = SignalStore(path)
    s.append("usage", usage_frame(5))
    s.close()
    ro = SignalStore(path, read_only=True)
    try:
        assert ro.count("usage") == 5
        with pytest.raises(PermissionError):
            ro.append("usage", usage_frame(1))
    finally:
        ro.close()


def test_transaction_rolls_back_whole(store: SignalStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as cur:
        cols = ", ".join(KINDS["usage"].columns)
        values = "'e1', 'c1', TIMESTAMPTZ '2026-01-01', 'm', 1, NULL, NULL, NULL"
        cur.execute(f"INSERT INTO signal_usage ({cols}) VALUES ({values})").fetchall()
        raise RuntimeError("boom")
    assert store.count("usage") == 0
