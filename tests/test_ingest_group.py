"""Group commit of API batches (forewarn.signals.group): each batch of a group gets what it would have got
alone, sent in the same order, and concurrent posts lose or duplicate nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from forewarn.api.app import create_app
from forewarn.config import Settings
from forewarn.context import Context
from forewarn.signals import group as grouping
from forewarn.signals.group import ingest_batch
from forewarn.signals.ingest import IngestReport, ingest_records
from forewarn.state.customers import upsert_customers
from forewarn.state.db import upgrade

Batch = tuple[list[dict[str, Any]], bool]  # (events, strict)


def make_ctx(home: Path, policy: str = "reject") -> Context:
    home.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{home / 'state.db'}"
    upgrade(url)
    ctx = Context(Settings(home=home, database_url=url, unknown_customers=policy))
    upsert_customers(ctx.engine, [(i, {"id": f"c{i}"}) for i in range(3)])
    return ctx


def ev(eid: str, value: Any = 1.0, **over: Any) -> dict[str, Any]:
    e = {"event_id": eid, "customer_id": f"c{sum(map(ord, eid)) % 3}", "ts": "2026-01-02T03:00:00Z",
         "metric": "data_gb", "value": value}  # fmt: skip
    return {**e, **over}


def as_one_group(ctx: Context, batches: list[Batch], monkeypatch: pytest.MonkeyPatch) -> list[IngestReport]:
    """Ingest ``batches`` from one thread each, queued in this order while the store is held, so that they
    run as one group (checked)."""
    committer = grouping._committer(ctx)
    sizes: list[int] = []
    run = grouping._GroupCommit._run

    def spy(self: Any, group: list[Any]) -> None:
        sizes.append(len(group))
        run(self, group)

    monkeypatch.setattr(grouping._GroupCommit, "_run", spy)
    results: list[Any] = [None] * len(batches)

    def post(i: int, events: list[dict[str, Any]], strict: bool) -> None:
        results[i] = ingest_batch(ctx, "usage", events, strict=strict)

    threads = []
    with committer._leader:
        for i, (events, strict) in enumerate(batches):
            threads.append(threading.Thread(target=post, args=(i, events, strict)))
            threads[-1].start()
            deadline = time.monotonic() + 10
            while len(committer._queue) < i + 1 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert len(committer._queue) == i + 1
    for t in threads:
        t.join(timeout=30)
    assert sizes == [len(batches)]  # one group
    return results


def one_by_one(ctx: Context, batches: list[Batch]) -> list[IngestReport]:
    return [ingest_records(ctx, "usage", events, strict=strict) for events, strict in batches]


def summary(report: IngestReport) -> tuple[Any, ...]:
    errors = [(e.line, e.field, e.got, e.message) for e in report.errors]
    return report.new, report.duplicate, report.rejected, errors


def stored(ctx: Context) -> dict[str, float]:
    return dict(ctx.signals.read("usage").select("event_id", "value").iter_rows())


def test_a_group_reports_each_batch_as_if_sent_one_after_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[Batch] = [
        ([ev(f"a{i}", 1.0) for i in range(10)], True),
        # overlaps the first batch (which arrived first and wins) and repeats one of its own ids
        ([ev(f"a{i}", 2.0) for i in range(5, 15)] + [ev("a12", 2.5)], False),
        # strict with a bad event: nothing stored, so the next batch's b ids are new
        ([ev(f"b{i}", 3.0) for i in range(5)] + [ev("b9", "lots")], True),
        ([ev(f"b{i}", 4.0) for i in range(5)], True),
        # partial with bad events at its own indexes 1 and 3, and one id already stored
        ([ev("d0", 5.0), ev("d1", 5.0, ts="soon"), ev("a0", 5.0), ev("d3", None), ev("d4", 5)], False),
        ([ev("b1", 6.0), ev("d0", 6.0)], True),  # all duplicates of earlier batches of the group
        # numbers as text and a bool (not a number in JSON) in a number field, between numeric batches
        ([ev("n1", True), ev("n2", "2.5"), ev("a1", 7)], False),
        ([ev("n2", 8.0), ev("n3", 8)], False),
    ]
    grouped_ctx, alone_ctx = make_ctx(tmp_path / "g"), make_ctx(tmp_path / "a")
    grouped = as_one_group(grouped_ctx, batches, monkeypatch)
    alone = one_by_one(alone_ctx, batches)
    assert [summary(r) for r in grouped] == [summary(r) for r in alone]
    assert stored(grouped_ctx) == stored(alone_ctx)
    # what the comparison covers: duplicates within and across batches, a strict rejection, partial errors
    assert [r.rejected for r in grouped] == [0, 0, 6, 0, 2, 0, 1, 0]
    assert [(e.line, e.field) for e in grouped[4].errors] == [(1, "ts"), (3, "value")]
    assert grouped[1].duplicate == 6 and grouped[5].duplicate == 2 and grouped[7].duplicate == 1
    grouped_ctx.close()
    alone_ctx.close()


@pytest.mark.parametrize("policy", ["reject", "create"])
def test_an_unknown_customer_in_a_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    batches: list[Batch] = [
        ([ev("u1"), ev("u2", customer_id="nobody")], False),
        ([ev("u3"), ev("u1", 9.0)], True),
    ]
    grouped_ctx, alone_ctx = make_ctx(tmp_path / "g", policy), make_ctx(tmp_path / "a", policy)
    grouped = as_one_group(grouped_ctx, batches, monkeypatch)
    alone = one_by_one(alone_ctx, batches)
    assert [summary(r) for r in grouped] == [summary(r) for r in alone]
    assert stored(grouped_ctx) == stored(alone_ctx)
    assert ("u2" in stored(grouped_ctx)) == (policy == "create")
    grouped_ctx.close()
    alone_ctx.close()


def test_concurrent_posts_lose_and_duplicate_nothing(tmp_path: Path, headers_for: Any) -> None:
    ctx = make_ctx(tmp_path)
    n_threads, n_batches, size = 6, 5, 40
    responses: list[list[dict[str, Any]]] = [[] for _ in range(n_threads)]
    sent: list[str] = []

    def batch(t: int, b: int) -> list[dict[str, Any]]:
        # each batch overlaps its thread's previous one and the next thread's ids
        start = t * n_batches * size // 2 + b * size // 2
        return [ev(f"e{i:05d}", float(t)) for i in range(start, start + size)]

    with TestClient(create_app(ctx), headers=headers_for(ctx)) as client:

        def worker(t: int) -> None:
            for b in range(n_batches):
                r = client.post("/v1/signals", json={"kind": "usage", "events": batch(t, b)})
                responses[t].append(r.json() if r.status_code == 200 else {"status": r.status_code})

        for t in range(n_threads):
            sent += [e["event_id"] for b in range(n_batches) for e in batch(t, b)]
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
    flat = [r for rs in responses for r in rs]
    assert len(flat) == n_threads * n_batches and all("new" in r for r in flat), flat
    assert all(r["new"] + r["duplicate"] == size and r["rejected"] == 0 for r in flat)
    assert sum(r["new"] for r in flat) == len(set(sent)) == ctx.signals.count("usage")
    ctx.close()


def test_envelope_errors_name_what_is_wrong(tmp_path: Path, headers_for: Any) -> None:
    ctx = make_ctx(tmp_path)
    with TestClient(create_app(ctx), headers=headers_for(ctx)) as client:
        post = client.post
        r = post(
            "/v1/signals",
            content=b'{"kind": "usage", "events": [',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
        assert r.json()["detail"][0]["loc"] == ["body", 29]
        r = post("/v1/signals", json={"kind": "usage", "events": [ev("x1"), "not an event"]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "events", 1]
        r = post("/v1/signals", json={"kind": 7, "events": []})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]
        r = post("/v1/signals", content=b"", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
        # an empty batch is fine
        assert post("/v1/signals", json={"kind": "usage", "events": []}).json()["new"] == 0
        r = post("/v1/signals?partial=maybe", json={"kind": "usage", "events": [ev("x2")]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "partial"]
    # no request is left announced (a group about to run would wait for it)
    assert grouping._committer(ctx)._arriving == 0
    assert ctx.signals.count("usage") == 0
    ctx.close()
