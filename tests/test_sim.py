"""The simulated company: deterministic, schema-conformant, and its ground truth matches what it emitted."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from forewarn.signals.schema import KINDS
from forewarn.sim import truth as truth_mod
from forewarn.sim.reactions import contacts_given_notices
from forewarn.sim.world import FILES, SimConfig, World, simulate

# small, fast, and with enough of every rare event to check (higher rates than the defaults on purpose)
CFG = SimConfig(
    customers=400,
    days=75,
    seed=11,
    p_device_failure=0.25,
    p_billing_error=0.05,
    p_shipment_late=0.5,
    outages_per_30_days=2.0,
    p_purchase_lapse=0.3,
    p_visit_lapse=0.3,
)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    out = tmp_path_factory.mktemp("sim") / "a"
    return simulate(CFG, out), out


@pytest.fixture(scope="module")
def world(world_dir: tuple[World, Path]) -> World:
    return world_dir[0]


@pytest.fixture(scope="module")
def out(world_dir: tuple[World, Path]) -> Path:
    return world_dir[1]


@pytest.fixture(scope="module")
def gt(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "ground_truth.jsonl").read_text().splitlines()]


def _t(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _of(gt: list[dict], kind: str) -> list[dict]:
    return [r for r in gt if r["type"] == kind]


# --- determinism -----------------------------------------------------------------------------------------


def test_writes_exactly_the_documented_files(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)


def test_same_seed_gives_byte_identical_files(out: Path, tmp_path: Path) -> None:
    simulate(CFG, tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_same_seed_is_identical_across_processes(tmp_path: Path) -> None:
    """No set or hash ordering leaks into the output: two interpreters with different hash seeds agree."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from forewarn.sim.world import SimConfig, simulate; "
        "simulate(SimConfig(customers=80, days=30, seed=4), Path(sys.argv[1]))"
    )
    for h in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": h}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / h)], check=True, env=env)
    for name in FILES:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


def test_different_seed_differs(out: Path, tmp_path: Path) -> None:
    simulate(replace(CFG, seed=CFG.seed + 1), tmp_path)
    for name in ("usage.parquet", "ground_truth.jsonl", "contact.jsonl", "customers.jsonl"):
        assert (tmp_path / name).read_bytes() != (out / name).read_bytes(), name


def test_config_rejects_too_short_worlds() -> None:
    with pytest.raises(ValueError, match="days must be at least 14"):
        SimConfig(days=5)


# --- every row conforms to the signal schema ----------------------------------------------------------------


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(fh)]
    return pl.read_parquet(path).to_dicts()


def _check(kind: str, field: str, ftype: str, value: object) -> None:
    where = f"{kind}.{field}={value!r}"
    if ftype == "str":
        assert isinstance(value, str) and value, where
    elif ftype == "float":
        assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value), where
        if isinstance(value, str):
            float(value)
    elif ftype == "int":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif ftype == "bool":
        assert isinstance(value, bool), where
    elif ftype == "timestamp":
        if isinstance(value, str):
            assert value.endswith("Z"), where
            _t(value)
        else:
            assert isinstance(value, datetime) and value.utcoffset() == timedelta(0), where
    elif ftype == "date":
        assert isinstance(value, str | date), where
        if isinstance(value, str):
            date.fromisoformat(value)
    elif ftype == "lines":
        assert isinstance(value, list) and value, where
        for line in value:
            assert set(line) == {"code", "description", "amount", "quantity"}, where
            assert isinstance(line["code"], str) and isinstance(line["amount"], int | float), where


CSV_NUMERIC = {"float", "int"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_row_conforms_to_the_schema(out: Path, kind: str) -> None:
    path = next(p for p in out.iterdir() if p.name.split(".")[0] == kind)
    if path.suffix == ".parquet":
        # typed columns: check the types once, then nulls, uniqueness and choices column-wise
        df = pl.read_parquet(path)
        assert df.schema == KINDS[kind].polars_schema
        assert df.height > 0 and df["event_id"].n_unique() == df.height
        for f in KINDS[kind].all_fields:
            if f.required:
                assert df[f.name].null_count() == 0, f"{path.name}: {f.name} has nulls"
            if f.choices:
                assert set(df[f.name].drop_nulls().unique()) <= set(f.choices), f.name
        for row in df.head(200).to_dicts():  # and a sample value by value, as a reader would see it
            for f in KINDS[kind].all_fields:
                if row[f.name] is not None:
                    _check(kind, f.name, f.type, row[f.name])
        return
    rows = _rows(path)
    assert rows, f"{path.name} is empty"
    spec = KINDS[kind]
    assert set(rows[0]) == set(spec.columns), path.name
    ids = set()
    for row in rows:
        ids.add(row["event_id"])
        for f in spec.all_fields:
            value = row[f.name]
            if value is None:
                assert not f.required, f"{path.name}: required {f.name} is missing in {row['event_id']}"
                continue
            if path.suffix == ".csv" and f.type in CSV_NUMERIC:
                value = float(value)
            _check(kind, f.name, f.type, value)
            if f.choices:
                assert value in f.choices, f"{kind}.{f.name}={value!r}"
    assert len(ids) == len(rows), f"{path.name}: event_id is not unique"


def test_customers_have_contact_details_consent_and_zones(out: Path) -> None:
    from zoneinfo import ZoneInfo

    rows = _rows(out / "customers.jsonl")
    assert len(rows) == CFG.customers
    regions = {r.name: r.timezone for r in CFG.regions}
    for c in rows:
        assert c["timezone"] == regions[c["region"]]
        ZoneInfo(c["timezone"])
        assert "@" in c["email"] and c["phone"].startswith("+")
        assert c["channels"] and all(ch in c["consent"] for ch in c["channels"])
        assert all(isinstance(v, bool) for topics in c["consent"].values() for v in topics.values())
        assert {"plan_limit_gb", "monthly_fee", "signup_date", "devices"} <= set(c["attributes"])
    assert any(c["consent"]["email"].get("marketing") is False for c in rows)
    assert any(c["consent"]["sms"]["*"] is False for c in rows)


# --- the ground truth matches what was emitted --------------------------------------------------------------


def test_truth_has_every_kind_of_event(gt: list[dict]) -> None:
    kinds = {r["type"] for r in gt}
    assert kinds == set(truth_mod.TYPES), set(truth_mod.TYPES) - kinds


def test_outage_affected_are_the_dependents_in_each_region(out: Path, gt: list[dict]) -> None:
    deps = _rows(out / "dependencies.csv")
    outages = _of(gt, "outage") + _of(gt, "maintenance")
    assert any(len(o["affected"]) == 2 for o in _of(gt, "outage")), "no outage widened to a second region"
    for o in outages:
        assert [a["region"] for a in o["affected"]] == o["regions"]
        for a in o["affected"]:
            expected = {
                d["customer_id"]
                for d in deps
                if d["service_id"] == o["service_id"] and d["region"] == a["region"]
            }
            assert set(a["customers"]) == expected and expected, (o["id"], a["region"])
            assert _t(o["start"]) <= _t(a["added_at"]) < _t(o["end"])


def test_outages_show_in_service_metrics(out: Path, gt: list[dict]) -> None:
    metrics = pl.read_parquet(out / "service_metric.parquet").filter(pl.col("metric") == "error_rate")
    for o in _of(gt, "outage"):
        for a in o["affected"]:
            series = metrics.filter(
                (pl.col("service_id") == o["service_id"]) & (pl.col("region") == a["region"])
            )
            during = series.filter((pl.col("ts") > _t(a["added_at"])) & (pl.col("ts") <= _t(o["end"])))
            before = series.filter(pl.col("ts") <= _t(o["start"]) - timedelta(hours=1))
            assert during["value"].median() > 10 * before["value"].median(), o["id"]
        first = metrics.filter(
            (pl.col("service_id") == o["service_id"]) & (pl.col("region") == o["regions"][0])
        )
        at = first.filter(pl.col("ts") == _t(o["detectable_from"]))["value"]
        assert at.len() == 1 and at[0] > 0.05, o["id"]


def test_usage_anomalies_are_visible_in_the_rows(out: Path, gt: list[dict]) -> None:
    usage = pl.read_parquet(out / "usage.parquet")
    checked = 0
    for r in gt:
        if r["type"] not in ("usage_spike", "usage_drop", "level_shift", "went_silent"):
            continue
        rows = usage.filter(pl.col("customer_id") == r["customer_id"]).sort("ts")
        start, seen = _t(r["start"]), _t(r["detectable_from"])
        assert seen == start + timedelta(days=1)  # rows are stamped at the end of their day
        before = rows.filter((pl.col("ts") <= start) & (pl.col("ts") > start - timedelta(days=28)))["value"]
        if r["type"] == "went_silent":
            assert rows.filter(pl.col("ts") > start).height == 0
            assert rows["ts"].max() == start, "the last row is the day before it went silent"
            continue
        assert before.len() >= 7, "anomalies leave history before them"
        end = _t(r["end"]) if r["end"] else start + timedelta(days=7)
        during = rows.filter((pl.col("ts") > start) & (pl.col("ts") <= end))["value"]
        assert rows.filter(pl.col("ts") == seen).height == 1
        ratio = during.median() / before.median()
        factor = r["details"]["factor"]
        if factor > 1:
            assert ratio > 1.5, (r["id"], ratio)
        else:
            assert ratio < 0.65, (r["id"], ratio)
        checked += 1
    assert checked >= 10


def test_billing_errors_are_on_the_draft_invoice(out: Path, gt: list[dict]) -> None:
    invoices = {(i["invoice_id"], i["status"]): i for i in _rows(out / "invoice.jsonl")}
    deps = {(d["customer_id"], d["service_id"]) for d in _rows(out / "dependencies.csv")}
    usage = pl.read_parquet(out / "usage.parquet")
    errors = _of(gt, "billing_error")
    assert {e["details"]["error"] for e in errors} == {
        "duplicate_line",
        "unsubscribed_service",
        "usage_mismatch",
    }
    for e in errors:
        inv = invoices[(e["details"]["invoice_id"], "draft")]
        assert inv["customer_id"] == e["customer_id"] and inv["ts"] == e["detectable_from"]
        codes = [line["code"] for line in inv["lines"]]
        kind = e["details"]["error"]
        if kind == "duplicate_line":
            assert codes.count("base") == 2
        elif kind == "unsubscribed_service":
            svc = e["details"]["service_id"]
            assert f"addon_{svc}" in codes and (e["customer_id"], svc) not in deps
        else:
            # metered use in the period (within the window) against what the overage line bills
            lo = datetime.fromisoformat(inv["period_start"]).replace(tzinfo=UTC) + timedelta(days=1)
            hi = datetime.fromisoformat(inv["period_end"]).replace(tzinfo=UTC) + timedelta(days=1)
            used = usage.filter(
                (pl.col("customer_id") == e["customer_id"]) & (pl.col("ts") >= lo) & (pl.col("ts") <= hi)
            )["value"].sum()
            billed = next(line["quantity"] for line in inv["lines"] if line["code"] == "overage")
            assert billed > max(0.0, used - e["details"]["limit_gb"]) + 10, (e["id"], billed, used)
        total = round(sum(line["amount"] for line in inv["lines"]), 2)
        assert abs(total - inv["total"]) < 0.011


def test_bill_shocks_are_on_the_issued_invoice(out: Path, gt: list[dict]) -> None:
    invoices = {(i["invoice_id"], i["status"]): i for i in _rows(out / "invoice.jsonl")}
    shocks = _of(gt, "bill_shock")
    assert shocks
    for s in shocks:
        inv = invoices[(s["details"]["invoice_id"], "issued")]
        assert inv["ts"] == s["start"] and inv["total"] >= CFG.bill_shock_ratio * s["details"]["usual"]


def test_device_failures_degrade_before_they_fail(out: Path, gt: list[dict]) -> None:
    tele = pl.read_parquet(out / "telemetry.parquet")
    failures = _of(gt, "device_failure")
    assert len(failures) >= 3
    for f in failures:
        dev = f["details"]["device_id"]
        rows = tele.filter(pl.col("device_id") == dev)
        assert rows.filter(pl.col("ts") >= _t(f["start"])).height == 0, "a failed device stops reporting"
        total = rows.group_by("ts").agg(pl.col("value").sum()).sort("ts")
        series = total["value"].to_list()
        assert series == sorted(series), "degradation never goes back"
        nonzero = total.filter(pl.col("value") > 0)
        assert nonzero["ts"][0] == _t(f["detectable_from"])
        assert nonzero.height >= 3 and series[-1] > 3 * nonzero["value"][0], "counters rise before failure"
        assert _t(f["start"]) - _t(f["detectable_from"]) >= timedelta(days=2)
    healthy = tele.filter(~pl.col("device_id").is_in([f["details"]["device_id"] for f in failures]))
    assert healthy.filter(pl.col("value") > 0)["device_id"].n_unique() > 0, "some healthy devices carry noise"
    assert healthy.filter(pl.col("value") == 0).height > 0.9 * healthy.height


def test_lapses_stop_the_cadence(out: Path, gt: list[dict]) -> None:
    purchases = pl.read_parquet(out / "purchase.parquet")
    lapses = _of(gt, "purchase_lapse") + _of(gt, "contact_lapse")
    assert lapses
    for r in lapses:
        rows = purchases.filter(pl.col("customer_id") == r["customer_id"])
        assert rows.filter(pl.col("ts") > _t(r["start"])).height == 0
        assert rows.height == r["details"]["events_before"] >= 3
        assert _t(r["detectable_from"]) > rows["ts"].max()


def test_shipment_delays_match_the_shipments(out: Path, gt: list[dict]) -> None:
    ships = _rows(out / "shipment.csv")
    for r in _of(gt, "shipment_delay"):
        delayed = [
            s for s in ships if s["shipment_id"] == r["details"]["shipment_id"] and s["status"] == "delayed"
        ]
        assert len(delayed) == 1 and delayed[0]["ts"] == r["detectable_from"]
        assert delayed[0]["expected_date"] > delayed[0]["promised_date"]


def test_caused_contacts_exist_after_their_cause(out: Path, gt: list[dict]) -> None:
    contacts = {c["event_id"]: c for c in _rows(out / "contact.jsonl")}
    by_id = {r["id"]: r for r in gt}
    truth_contacts = _of(gt, "contact")
    assert {c["id"] for c in truth_contacts} == set(contacts), "every contact is in the truth and vice versa"
    caused = [c for c in truth_contacts if c["cause"]]
    assert len(caused) > 50
    for c in caused:
        row = contacts[c["id"]]
        cause = by_id[c["cause"]]
        assert row["customer_id"] == c["customer_id"] and row["ts"] == c["start"]
        assert _t(row["ts"]) > _t(cause["start"]), (c["id"], cause["id"])
        if cause["customer_id"] is not None:
            assert cause["customer_id"] == c["customer_id"]
        else:  # an outage: the customer was affected, and called after their region was added
            region = next(a for a in cause["affected"] if c["customer_id"] in a["customers"])
            assert _t(row["ts"]) > _t(region["added_at"])
        assert 0.0 <= c["avoid_draw"] < 1.0 and 0.0 < c["p_avoid"] <= 1.0
    texts = [contacts[c["id"]]["text"] for c in caused]
    assert len(set(texts)) > 0.6 * len(texts), "wording varies"


def test_outage_contacts_come_minutes_to_hours_after_the_start(gt: list[dict]) -> None:
    starts = {o["id"]: _t(o["start"]) for o in _of(gt, "outage")}
    delays = sorted(
        (_t(c["start"]) - starts[c["cause"]]).total_seconds() / 60
        for c in _of(gt, "contact")
        if c["cause"] in starts
    )
    assert len(delays) > 20
    median = delays[len(delays) // 2]
    assert 10 < median < 180 and delays[0] > 1


def test_truth_file_loads_to_the_in_memory_frame(out: Path, world: World) -> None:
    loaded = truth_mod.load(out / "ground_truth.jsonl")
    assert loaded.schema == world.truth.schema
    assert loaded.drop("details", "affected").equals(world.truth.drop("details", "affected"))


def test_the_folder_ingests_without_a_rejected_row(tmp_path: Path, ctx) -> None:
    from forewarn.signals.ingest import ingest_paths

    small = tmp_path / "world"
    world = simulate(replace(CFG, customers=60, days=30), small)
    report = ingest_paths(ctx, [small], unknown_customers="reject")
    assert report.rejected == 0, report.errors[:5]
    assert report.new == sum(f.height for f in world.frames.values()) + 60 + 5 + world.dependencies.height
    again = ingest_paths(ctx, [small], unknown_customers="reject")
    assert again.rejected == 0 and again.duplicate >= sum(f.height for f in world.frames.values())


def test_customer_events_name_the_customers_region(out: Path, gt: list[dict]) -> None:
    region = {c["id"]: c["region"] for c in _rows(out / "customers.jsonl")}
    for r in gt:
        if r["customer_id"] is not None:
            assert r["regions"] == [region[r["customer_id"]]], r["id"]


# --- counterfactual contacts ---


def test_contacts_given_notices_removes_only_caused_contacts_after_their_notice(world: World) -> None:
    truth = world.truth
    contacts = truth.filter(pl.col("type") == "contact")
    caused = contacts.filter(pl.col("cause").is_not_null())
    early = caused.select(
        "customer_id",
        pl.col("cause").alias("cause_id"),
        (pl.col("start") - pl.duration(minutes=1)).alias("notified_at"),
    )
    kept = contacts_given_notices(truth, early)
    avoidable = caused.filter(pl.col("avoid_draw") < pl.col("p_avoid"))
    assert 0 < avoidable.height < caused.height
    assert set(kept["id"]) == set(contacts["id"]) - set(avoidable["id"])

    late = early.with_columns(pl.col("notified_at") + pl.duration(minutes=2))
    assert contacts_given_notices(truth, late).height == contacts.height
    wrong_cause = early.with_columns(pl.lit("outage-99").alias("cause_id"))
    assert contacts_given_notices(truth, wrong_cause).height == contacts.height

    rows = contacts_given_notices(truth, early, world.frames["contact"])
    assert rows.columns == world.frames["contact"].columns
    assert set(rows["event_id"]) == set(kept["id"])


def test_contacts_given_notices_explains_a_bad_notices_frame(world: World) -> None:
    with pytest.raises(ValueError, match="notified_at"):
        contacts_given_notices(world.truth, pl.DataFrame({"customer_id": ["C1"], "cause_id": ["x"]}))


# --- command line ---


def test_cli_simulate_writes_the_files(tmp_path: Path) -> None:
    from forewarn.cli import app

    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--customers",
            "50",
            "--days",
            "30",
            "--seed",
            "3",
            "--out",
            str(tmp_path),
            "--start",
            "2026-03-01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ground truth" in result.output
    meta = json.loads((tmp_path / "world.json").read_text())
    assert meta["seed"] == 3 and meta["start"] == "2026-03-01" and meta["counts"]["customers"] == 50
    first = pl.read_parquet(tmp_path / "usage.parquet")["ts"].min()
    assert first == datetime(2026, 3, 2, tzinfo=UTC)


@pytest.mark.slow
def test_ten_thousand_customers_half_a_year_in_under_30_seconds(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    simulate(SimConfig(customers=10_000, days=180, seed=1), tmp_path)
    assert time.perf_counter() - t0 < 30
