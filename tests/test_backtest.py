"""Backtests: exact figures on hand-made history, shared guardrails, reports, a simulated world, CLI."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from forewarn.config import DeliverySettings, Settings, get_settings
from forewarn.decide.playbooks import PlaybookFile, PlaybookSet, load_playbooks
from forewarn.measure.backtest import BacktestData, data_from_world, day_run, run_backtest
from forewarn.signals.schema import KINDS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 90
QUIET_NONE = DeliverySettings(quiet_hours_start=0, quiet_hours_end=0)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "playbooks"


def _usage(drops: dict[str, int]) -> pl.DataFrame:
    """Daily data use around 10 GB (weekly pattern); customers in ``drops`` fall to 0.3 GB from that day."""
    rows = []
    for cid in ("A", "B", "C", "D"):
        for d in range(DAYS):
            v = 10.0 + (d % 7) * 0.3 + (d % 3) * 0.1
            if cid in drops and d >= drops[cid]:
                v = 0.3
            rows.append((f"{cid}-{d}", cid, T0 + timedelta(days=d), "data_gb", v, "GB", "day"))
    return pl.DataFrame(
        rows, schema=["event_id", "customer_id", "ts", "metric", "value", "unit", "period"], orient="row"
    ).cast({"ts": pl.Datetime("us", "UTC")})


def _contacts(rows: list[tuple[str, datetime, str]]) -> pl.DataFrame:
    schema = KINDS["contact"].polars_schema
    data = [
        {"event_id": f"k{i}", "customer_id": c, "ts": t, "channel": "phone", "topic": topic}
        for i, (c, t, topic) in enumerate(rows)
    ]
    return pl.DataFrame(
        data, schema={k: schema[k] for k in ("event_id", "customer_id", "ts", "channel", "topic")}
    )


def _customers(ids: tuple[str, ...] = ("A", "B", "C", "D")) -> pl.DataFrame:
    return pl.DataFrame(
        {"customer_id": list(ids), "timezone": ["UTC"] * len(ids), "email": [f"{c}@example.com" for c in ids]}
    )


def _pset(text: dict) -> PlaybookSet:
    f = PlaybookFile.model_validate(text)
    from forewarn.decide.playbooks import Guardrails

    return PlaybookSet(tuple(f.playbooks), f.guardrails or Guardrails())


DROP = {
    "name": "drop",
    "mode": "live",
    "when": {"kind": "usage", "condition": "usage:drop:*"},
    "then": [{"notify": {"channels": ["email"], "template": "playbook_usage"}}],
    "cooldown": "60d",
    "expiry": "30d",
}


def test_exact_precision_recall_and_lead_time_on_hand_made_history() -> None:
    # A and B drop on day 60 / 65; A calls about it 2 days 3 hours after the run that caught it.
    # C never drops but calls about usage (a miss for recall); D is quiet.
    usage = _usage({"A": 60, "B": 65})
    a_run = day_run(T0 + timedelta(days=60), datetime.min.time().replace(hour=9))
    contacts = _contacts(
        [
            ("A", a_run + timedelta(days=2, hours=3), "usage"),
            ("C", T0 + timedelta(days=70), "usage"),
            ("B", T0 + timedelta(days=80), "billing"),
        ]
    )
    data = BacktestData({"usage": usage, "contact": contacts}, _customers())
    report = run_backtest(
        _pset({"playbooks": [DROP]}), data, date(2026, 2, 15), date(2026, 3, 31), settings=QUIET_NONE
    )
    [p] = report.playbooks
    frame = report.decisions
    sent = frame.filter(pl.col("status") == "pending")
    assert sorted(sent["customer_id"].to_list()) == ["A", "B"]
    # the drop was decided at the first daily run after it showed in the data
    assert sent.filter(pl.col("customer_id") == "A")["at"][0] == a_run
    assert p.messages == 2 and p.customers_targeted == 2
    assert p.precision == pytest.approx(0.5)  # A contacted on the topic, B did not (billing is another topic)
    assert p.recall == pytest.approx(0.5)  # of A and C, who contacted on the topic, A was told first
    assert p.lead_time_days == pytest.approx(2.125)
    assert p.rate_max == 1 and report.overall["rate_max"] == 1
    # one message per episode: the drop continues for weeks but is decided once
    assert frame.height == 2


def test_backtest_uses_the_shared_guardrails_budget_thread_and_open_ticket() -> None:
    usage = _usage({"A": 60, "B": 65, "C": 62})
    contacts = _contacts([("C", T0 + timedelta(days=61, hours=20), "usage")])  # C has an open ticket
    second = {
        **DROP,
        "name": "drop-again",
        "then": [{"notify": {"channels": ["email"], "template": "playbook_usage", "priority": "high"}}],
    }
    level = {**DROP, "name": "shift", "when": {"kind": "usage", "condition": "usage:level_shift:*"}}
    pset = _pset(
        {"guardrails": {"budget": {"max_messages": 1, "window": "7d"}}, "playbooks": [DROP, second, level]}
    )
    data = BacktestData({"usage": usage, "contact": contacts}, _customers())
    report = run_backtest(pset, data, date(2026, 2, 15), date(2026, 3, 31), settings=QUIET_NONE)
    by = {p.name: p for p in report.playbooks}
    # both drop playbooks see the same condition: the higher priority goes first, the other threads into it
    assert by["drop-again"].messages == 2 and by["drop"].messages == 0
    assert by["drop"].suppressed_by.get("thread") == 2
    assert (
        report.decisions.filter(pl.col("customer_id") == "C")["guardrail"].to_list().count("open_ticket") >= 1
    )
    # a level shift a few days later falls inside the budget window (1 in 7 days)
    if by["shift"].decisions:
        assert by["shift"].suppressed_by.get("budget", 0) >= 1
    sent = report.decisions.filter(pl.col("status").is_in(["pending", "deferred"])).sort("send_at")
    for cid, g in sent.group_by("customer_id"):
        times = g["send_at"].to_list()
        assert all(b - a >= timedelta(days=7) for a, b in zip(times, times[1:], strict=False)), cid


def test_an_open_ticket_is_a_case_open_by_its_lifecycle_not_a_fixed_window() -> None:
    # C called about usage the evening before its drop shows, and the agent solved it that night: the drop is
    # news to act on. D called five days before its drop and nobody closed it: still an open case (the live
    # definition, forewarn.state.tickets; the backtest used to count only contacts in the last 3 days).
    contacts = _contacts(
        [("C", T0 + timedelta(days=61, hours=18), "usage"), ("D", T0 + timedelta(days=57), "usage")]
    )
    solved = pl.DataFrame(
        {
            "event_id": ["u1"],
            "customer_id": ["C"],
            "ts": [T0 + timedelta(days=61, hours=20)],
            "ticket_id": [contacts["event_id"][0]],
            "status": ["solved"],
        },
        schema={k: v for k, v in KINDS["ticket_update"].polars_schema.items()},
    )
    data = BacktestData(
        {"usage": _usage({"C": 62, "D": 62}), "contact": contacts, "ticket_update": solved}, _customers()
    )
    report = run_backtest(
        _pset({"playbooks": [DROP]}), data, date(2026, 2, 15), date(2026, 3, 31), settings=QUIET_NONE
    )
    by = {r["customer_id"]: r for r in report.decisions.iter_rows(named=True)}
    assert by["C"]["status"] == "pending" and by["C"]["guardrail"] is None
    assert by["D"]["status"] == "suppressed" and by["D"]["guardrail"] == "open_ticket"


def test_report_renders_text_json_and_html() -> None:
    data = BacktestData({"usage": _usage({"A": 60})}, _customers())
    report = run_backtest(
        _pset({"playbooks": [DROP]}), data, date(2026, 2, 1), date(2026, 3, 31), settings=QUIET_NONE
    )
    text = report.to_text()
    assert "drop" in text and "precision" in text
    doc = json.loads(report.to_json())
    assert doc["playbooks"][0]["name"] == "drop" and doc["days"] == 59
    html = report.to_html()
    assert html.startswith("<!doctype html>") and html.count("<svg") == 3 and "<script" not in html


@pytest.fixture(scope="module")
def world():
    from forewarn.sim.world import SimConfig, simulate

    return simulate(SimConfig(customers=300, days=75, seed=11))


def test_examples_on_a_simulated_world(world) -> None:
    data = data_from_world(world)
    pset = load_playbooks(EXAMPLES)
    report = run_backtest(
        pset, data, date(2026, 2, 1), date(2026, 3, 15), settings=Settings(home="/tmp/fw-bt")
    )
    names = {p.name for p in report.playbooks}
    assert names == {p.name for p in pset.active()}
    frame = report.decisions
    # budget across every playbook: at most 3 messages in any 7 days per customer
    sent = frame.filter(pl.col("status").is_in(["pending", "deferred"]) & (pl.col("action") == "notify"))
    for _cid, g in sent.group_by("customer_id"):
        times = sorted(g["send_at"].to_list())
        for i, t in enumerate(times):
            assert sum(1 for u in times[i:] if u < t + timedelta(days=7)) <= 3
    assert report.overall["rate_max"] <= 3
    # every decision that does not go out says which guardrail
    assert frame.filter(~pl.col("status").is_in(["pending", "open"]))["guardrail"].null_count() == 0
    # ground truth is used when present
    assert any(p.precision_truth is not None for p in report.playbooks)


def test_cli_backtest(world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forewarn.cli import app
    from forewarn.sim.world import write
    from forewarn.state.db import upgrade

    out = tmp_path / "world"
    write(world, out)
    home = tmp_path / "home"
    monkeypatch.setenv("FOREWARN_HOME", str(home))
    monkeypatch.delenv("FOREWARN_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        upgrade(get_settings().database_url)
        from forewarn.context import Context
        from forewarn.signals.ingest import ingest_paths

        ctx = Context()
        ingest_paths(ctx, [out / f for f in ("customers.jsonl", "usage.parquet", "contact.jsonl")])
        ctx.close()
        html, js = tmp_path / "r.html", tmp_path / "r.json"
        res = CliRunner().invoke(
            app,
            [
                "backtest",
                str(EXAMPLES / "usage.yaml"),
                "--from",
                "2026-02-01",
                "--to",
                "2026-03-10",
                "--html",
                str(html),
                "--json",
                str(js),
                "--truth",
                str(out / "ground_truth.jsonl"),
            ],
        )
        assert res.exit_code == 0, res.output
        assert "usage-drop" in res.output
        assert json.loads(js.read_text())["start"] == "2026-02-01" and "<svg" in html.read_text()
        bad = CliRunner().invoke(app, ["backtest", str(EXAMPLES), "--from", "yesterday"])
        assert bad.exit_code != 0 and "expected a date" in bad.output
        empty = CliRunner().invoke(
            app, ["backtest", str(EXAMPLES / "usage.yaml"), "--from", "2027-01-01", "--to", "2027-01-31"]
        )
        assert "warning: no signals between 2027-01-01 and 2027-01-31" in " ".join(empty.output.split())
        assert "warning" not in res.output  # a window inside the history warns of nothing
    finally:
        get_settings.cache_clear()


def test_untagged_contacts_get_a_topic_from_their_words() -> None:
    from forewarn.measure.backtest import _contacts, infer_topic

    assert infer_topic("My router keeps rebooting since yesterday") == "device"
    assert infer_topic("I was charged twice on my last bill") == "billing"
    assert infer_topic("Thanks!") is None
    c = pl.DataFrame(
        {
            "event_id": ["1", "2", "3"],
            "customer_id": ["A", "B", "C"],
            "ts": [T0, T0, T0],
            "subject": ["Box died", None, None],
            "text": [None, "no internet since 9am", "hello"],
            "topic": [None, None, "billing"],
        }
    )
    got = dict(_contacts({"contact": c}).select("customer_id", "topic").iter_rows())
    assert got == {"A": "device", "B": "outage", "C": "billing"}


def test_reusing_firings_gives_the_same_report_without_detection() -> None:
    data = BacktestData({"usage": _usage({"A": 60, "B": 65})}, _customers())
    pset = _pset({"playbooks": [DROP]})
    cold = run_backtest(pset, data, date(2026, 2, 15), date(2026, 3, 31), settings=QUIET_NONE)
    # no signal frames at all the second time: the firings carry everything the replay needs
    warm = run_backtest(
        pset,
        BacktestData({}, _customers()),
        date(2026, 2, 15),
        date(2026, 3, 31),
        settings=QUIET_NONE,
        reuse=cold.firings,
    )
    assert warm.to_dict()["playbooks"] == cold.to_dict()["playbooks"]
    assert any("reused" in n for n in warm.notes)


def test_backtest_world_over_the_whole_history(world) -> None:
    from forewarn.measure.backtest import backtest_world

    report = backtest_world(world, EXAMPLES, settings=Settings(home="/tmp/fw-bt"), detect_every=7)
    assert report.start == date(2026, 1, 2) and report.days >= 70
    assert any(n.startswith("schedule:") and "(score_history)" in n for n in report.notes)
    assert {p.name for p in report.playbooks} == {p.name for p in load_playbooks(EXAMPLES).active()}


def test_detect_per_day_fallback_gives_the_schedule_history(world, monkeypatch) -> None:
    """A trip wire whose ``score_history`` is ``detect`` once per day (``detect_each_run``, what a wire with
    nothing faster returns) gives the schedule wire's report exactly."""
    from forewarn.detect.base import detect_each_run
    from forewarn.detect.schedule import ScheduleTripWire
    from forewarn.measure.backtest import backtest_world

    pset = load_playbooks(EXAMPLES / "schedule.yaml")
    settings = Settings(home="/tmp/fw-bt")
    history = backtest_world(world, pset, settings=settings)

    def daily_detect(self, frames, *, runs=None, **context):  # type: ignore[no-untyped-def]
        return detect_each_run(self, frames, runs or [], **context)

    monkeypatch.setattr(ScheduleTripWire, "score_history", daily_detect)
    daily = backtest_world(world, pset, settings=settings)
    keys = list(history.firings["schedule"].columns)
    assert history.firings["schedule"].height > 0
    assert history.firings["schedule"].sort(keys).equals(daily.firings["schedule"].sort(keys))
    assert history.to_dict()["playbooks"] == daily.to_dict()["playbooks"]
