"""The dashboard pages, their JSON endpoints and ``/metrics`` over HTTP, on test_metrics' hand-built history.

The numbers asserted here are the ones worked out by hand in ``test_metrics.py``'s story.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from forewarn.api.app import create_app
from forewarn.context import Context
from forewarn.measure.ops import record_detector_run
from forewarn.state.models import AffectedCustomer, OutboxMessage
from test_metrics import at, seed, signals


@pytest.fixture
def client(ctx: Context, api_headers: dict[str, str], dashboard_login) -> Iterator[TestClient]:
    seed(ctx.engine)
    with ctx.engine.begin() as conn:
        conn.execute(
            sa.insert(AffectedCustomer.__table__),
            [
                {"incident_id": 1, "customer_id": f"c{i}", "service_id": "fibre", "region": "north"}
                for i in range(1, 5)
            ],
        )
    for kind, frame in signals().frames.items():
        ctx.signals.append(kind, frame)
    with TestClient(create_app(ctx), headers=api_headers) as c:
        dashboard_login(c, ctx.engine, "admin")
        yield c


PERIOD = {"from": "2026-03-01", "to": "2026-03-08"}


def test_every_page_renders(client: TestClient) -> None:
    for path in ["/", "/incidents", "/incidents/1", "/findings", "/customers/c6", "/outbox", "/playbooks"]:
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert "<h1" in r.text and '<main id="main"' in r.text, path
        assert 'src="/static/htmx.min.js"' in r.text
    assert client.get("/static/htmx.min.js").status_code == 200
    assert client.get("/static/forewarn.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/../state.db").status_code == 404


def test_overview_shows_the_known_numbers(client: TestClient) -> None:
    html = client.get("/", params=PERIOD).text
    assert "900.0 per 1,000 customers" in html
    assert "<svg" in html and 'role="img"' in html
    assert "control group" in html and "bill-shock" in html
    smb = client.get("/", params=PERIOD | {"segment": "smb"}).text
    assert "1,000.0 per 1,000 customers" in smb
    assert client.get("/", params={"from": "2026-03-08", "to": "2026-03-01"}).status_code == 400
    assert client.get("/", params={"from": "yesterday", "to": "2026-03-01"}).status_code == 400
    assert client.get("/", params={"bucket": "month"}).status_code == 400


def test_default_period_ends_at_the_newest_activity(client: TestClient) -> None:
    d = client.get("/v1/metrics/overview").json()
    # newest contact is 03-08 00:00 (c9): 30 whole days up to and including 03-08, so all 11 contacts
    assert d["metrics"]["period"]["start"].startswith("2026-02-07")
    assert d["metrics"]["period"]["end"].startswith("2026-03-09")
    assert d["metrics"]["contacts"]["total"] == 11
    assert d["now"] == {"open_incidents": 2, "open_findings": 1, "queued": 1, "dead_letters": 1}


def test_outcomes_json_matches_the_metrics(client: TestClient) -> None:
    m = client.get("/v1/metrics/outcomes", params=PERIOD).json()
    assert m["contacts"]["total"] == 9 and m["notices"]["sent"] == 4
    assert m["avoidable_contacts"]["after_notice"] == 3
    # the real signal store is wired in: surveys and churn come from it
    assert m["surveys"]["csat"] == {"answers": 2, "mean": 3.0}
    assert m["control_groups"][0]["control"]["churned"] == 1


def test_incident_progress_and_notified_customers(client: TestClient) -> None:
    d = client.get("/v1/metrics/incidents/1").json()
    assert d["progress"] == {
        "affected": 4,
        "queued": 0,
        "delivered": 2,
        "failed": 1,
        "held_back": 1,
        "tickets": 4,
    }
    assert [(c["customer_id"], c["status"]) for c in d["customers"]] == [
        ("c1", "sent"),
        ("c2", "sent"),
        ("c3", "dead"),
        ("c4", "suppressed"),
    ]
    html = client.get("/incidents/1").text
    assert 'href="/customers/c1"' in html and 'hx-get="/incidents/1/progress"' in html
    part = client.get("/incidents/1/progress").text
    assert "<html" not in part and 'id="progress"' in part
    rows = client.get("/incidents", params={"partial": 1}).text
    assert "<html" not in rows and "Fibre outage north" in rows
    assert client.get("/incidents/99").status_code == 404
    assert client.get("/v1/metrics/incidents/99").status_code == 404


def test_findings_and_customer_timeline(client: TestClient) -> None:
    f = client.get("/v1/metrics/findings").json()
    assert [x["customer_id"] for x in f["findings"]] == ["c6"]
    assert f["findings"][0]["explanation"] == "your bill is 2.4x your usual"
    t = client.get("/v1/metrics/customers/c6").json()
    types = [e["type"] for e in t["timeline"]]
    assert {"finding", "notice", "ticket", "signal"} <= set(types)
    stamps = [e["at"] for e in t["timeline"]]
    assert stamps == sorted(stamps, reverse=True)
    assert client.get("/customers/nobody").status_code == 404
    # the page comes from the state store at once and asks htmx for the signals...
    page = client.get("/customers/c6").text
    assert 'hx-get="/customers/c6/story"' in page and "Loading signals" in page
    # ...which arrive as the whole timeline, signals included
    story = client.get("/customers/c6/story").text
    assert "<html" not in story and "t-signal" in story and "t-notice" in story and "hx-get" not in story
    assert client.get("/customers/nobody/story").status_code == 404


def test_outbox_filters_and_dead_letter_retry(client: TestClient, ctx: Context) -> None:
    dead = client.get("/v1/metrics/outbox", params={"status": "dead"}).json()
    assert [m["id"] for m in dead["messages"]] == [3]
    assert client.get("/v1/metrics/outbox", params={"channel": "sms"}).json()["messages"] == []
    assert client.get("/outbox", params={"status": "nonsense"}).status_code == 400
    html = client.get("/outbox", params={"status": "dead"}).text
    assert 'action="/outbox/3/retry"' in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    # without the page's CSRF token the retry is refused and nothing changes
    r = client.post("/outbox/3/retry", data={"back": "/outbox?status=dead"}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post(
        "/outbox/3/retry",
        data={"back": "/outbox?status=dead", "csrf_token": "0" * 64},
        follow_redirects=False,
    )
    assert r.status_code == 403
    with ctx.engine.connect() as conn:
        assert conn.scalar(sa.select(OutboxMessage.status).where(OutboxMessage.id == 3)) == "dead"
    r = client.post(
        "/outbox/3/retry", data={"back": "/outbox?status=dead", "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/outbox?status=dead&retried=3"
    with ctx.engine.connect() as conn:
        row = conn.execute(sa.select(OutboxMessage).where(OutboxMessage.id == 3)).one()
    assert (row.status, row.attempts) == ("pending", 0)
    # a second retry (or of a message that is not dead) changes nothing and says so
    r = client.post("/outbox/3/retry", headers={"X-CSRF-Token": token}, follow_redirects=False)
    assert "not_retried=3" in r.headers["location"]
    assert "not a dead letter" in client.get(r.headers["location"]).text
    # another site cannot make the browser retry
    r = client.post(
        "/outbox/1/retry",
        headers={"origin": "https://evil.example", "X-CSRF-Token": token},
        follow_redirects=False,
    )
    assert r.status_code == 403


def test_playbooks_page_reads_files(client: TestClient, ctx: Context) -> None:
    folder = ctx.settings.home / "playbooks"
    folder.mkdir()
    (folder / "care.yaml").write_text(
        "playbooks:\n  - name: bill-shock\n    mode: live\n    when: {kind: billing}\n"
        "    then: [{notify: {template: playbook_billing}}]\n    holdout: 0.1\n"
    )
    (ctx.settings.home / "backtests").mkdir()
    (ctx.settings.home / "backtests" / "usage.json").write_text('{"tripwire": "usage", "precision": 0.81}')
    d = client.get("/v1/metrics/playbooks").json()
    pb = {p["name"]: p for p in d["playbooks"]}
    assert pb["bill-shock"]["mode"] == "live" and pb["bill-shock"]["decisions"] == {
        "sent": 1,
        "failed": 1,
        "control": 2,
    }
    assert pb["outage-notice"]["decisions"] == {"shadow": 1} and pb["outage-notice"]["mode"] is None
    assert d["backtests"] == [{"file": "usage.json", "summary": {"tripwire": "usage", "precision": 0.81}}]
    html = client.get("/playbooks").text
    assert "precision" in html and "live" in html


SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)+\})? -?[0-9.e+-]+$')


def test_prometheus_metrics(client: TestClient) -> None:
    record_detector_run("billing", 0.25, findings=1)
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.strip().splitlines()
    typed = set()
    for line in lines:
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif not line.startswith("#"):
            assert SAMPLE.match(line), line
            assert line.split("{")[0].split(" ")[0].removesuffix("_count") in typed, f"untyped: {line}"
    text = r.text
    assert 'forewarn_outbox_messages{status="sent"} 4' in text
    assert 'forewarn_outbox_messages{status="dead"} 1' in text
    assert 'forewarn_outbox_messages{status="control"} 2' in text
    assert 'forewarn_delivery_errors{status="dead"} 0' in text  # the dead letter carries no last_error
    assert "forewarn_incidents_open 2" in text and "forewarn_findings_open 1" in text
    assert 'forewarn_detector_last_run_seconds{tripwire="billing"} 0.25' in text


def test_detector_run_reports_are_exported(client: TestClient) -> None:
    from forewarn.detect.runner import RunReport, WireReport
    from forewarn.measure.ops import record_run_report, reset_detector_stats

    reset_detector_stats()  # other tests in this process (the demo) record runs too
    report = RunReport(
        as_of=at(8),
        wires=[
            WireReport("cadence", "ok", firing=3, seconds=0.5),
            WireReport("devices", "error", "ValueError: boom", seconds=0.1),
            WireReport("schedule", "skipped", "module not available"),
        ],
    )
    record_run_report(report)
    text = client.get("/metrics").text
    assert 'forewarn_detector_last_findings{tripwire="cadence"} 3' in text
    assert 'forewarn_detector_errors_total{tripwire="devices"}' in text
    assert 'tripwire="schedule"' not in text


def test_delivery_rate_counts_the_last_hour(ctx: Context) -> None:
    from forewarn.measure.ops import prometheus_text

    seed(ctx.engine)
    text = prometheus_text(ctx.engine, now=at(2, 11))  # c1 (10:10) and c2 (10:30) were delivered
    assert 'forewarn_delivered_last_hour{channel="email"} 2' in text
    assert 'forewarn_delivery_latency_seconds{quantile="0.5"} 300.0' in text
    assert "forewarn_delivery_rate_per_second 0.000556" in text


def test_delivered_counts_customers_not_notices(client: TestClient, ctx: Context) -> None:
    """A second notice to the same customer (an update, the all-clear) does not count them twice."""
    o = OutboxMessage.__table__
    with ctx.engine.begin() as conn:
        first = (
            conn.execute(sa.select(o).where(o.c.incident_id == 1, o.c.customer_id == "c1")).mappings().first()
        )
        again = {k: v for k, v in first.items() if k != "id"} | {
            "idempotency_key": first["idempotency_key"] + ":2"
        }
        conn.execute(sa.insert(o), [again])
    progress = client.get("/v1/metrics/incidents/1").json()["progress"]
    assert progress["delivered"] == 2 and progress["delivered"] <= progress["affected"]
    html = " ".join(client.get("/incidents/1/progress").text.split())
    assert "Delivered to 2 of 4 affected customers" in html


def test_at_risk_leaves_out_long_gone_customers_and_gives_the_reason(
    client: TestClient, ctx: Context
) -> None:
    from forewarn.state.models import Finding

    with ctx.engine.begin() as conn:
        conn.execute(
            sa.insert(Finding.__table__),
            [
                {
                    "customer_id": "c5",
                    "kind": "usage",
                    "condition": "usage:silent:data_gb",
                    "status": "open",
                    "score": 193.3,
                    "confidence": 1.0,
                    "severity": "warning",
                    "explanation": "We have seen no data use from you for 145 days.",
                    "evidence": {"zero_run": 145},
                    "first_detected_at": at(3),
                    "last_detected_at": at(3),
                }
            ],
        )
    f = client.get("/v1/metrics/findings").json()
    assert [r["customer_id"] for r in f["at_risk"]] == ["c6"] and f["long_gone"] == 1
    assert f["at_risk"][0]["why"] == "your bill is 2.4x your usual"
    html = client.get("/findings").text
    assert "your bill is 2.4x your usual" in html and "silent or away for 90 days or more" in " ".join(
        html.split()
    )
