"""No email address, phone number or message body in logs or tracebacks (the whole demo run is checked in
``test_demo.py``; here each way in)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from forewarn.context import Context
from forewarn.privacy import logs
from forewarn.state.customers import upsert_customers
from forewarn.state.models import Customer

EMAIL, PHONE = "grace.hopper7@example.net", "+447700900123"


@pytest.fixture
def captured() -> Iterator[list[str]]:
    logs.install()
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(logging.Formatter("%(name)s %(message)s").format(record))

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(old)


def test_messages_arguments_and_tracebacks_are_redacted(captured: list[str]) -> None:
    log = logging.getLogger("forewarn.test")
    log.warning("sending to %s / %s failed: %r", EMAIL, PHONE, {"to": EMAIL})
    try:
        raise ValueError(f"550 <{EMAIL}>: mailbox unavailable")
    except ValueError:
        log.exception("delivery failed")
    text = "\n".join(captured)
    assert EMAIL not in text and PHONE not in text
    assert "sending to [email] / [phone] failed" in text and "{'to': '[email]'}" in text
    assert "Traceback" in text and "550 <[email]>: mailbox unavailable" in text
    # an access log line keeps its tuple of arguments for uvicorn's formatter, minus the address
    record = logging.getLogRecordFactory()(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/customers?email={EMAIL}", "1.1", 200),
        None,
    )
    assert isinstance(record.args, tuple) and record.args[4] == 200 and EMAIL not in record.getMessage()


def test_sql_errors_and_sql_logs_carry_no_parameters(ctx: Context, captured: list[str]) -> None:
    upsert_customers(ctx.engine, [(0, {"id": "c1", "email": EMAIL, "phone": PHONE})], source="test")
    body = "Your bill is 3x your usual; the private text of one message"
    logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)  # statements and result rows
    try:
        with ctx.engine.begin() as conn:
            conn.execute(sa.insert(Customer).values(id="c1", name=body, email=EMAIL, phone=PHONE))
    except sa.exc.IntegrityError as e:
        error = str(e)
        logging.getLogger("forewarn.test").exception("insert failed")
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(Customer.email, Customer.phone)).all() == [(EMAIL, PHONE)]
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    assert "UNIQUE" in error and EMAIL not in error and body not in error
    assert "parameters hidden" in error
    text = "\n".join(captured)
    assert "INSERT INTO customers" in text and "[result row hidden]" in text
    assert EMAIL not in text and PHONE not in text and body not in text


def test_uncaught_exception_in_a_thread_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    logs.install()

    def boom() -> None:
        raise RuntimeError(f"could not reach {EMAIL} at {PHONE}")

    t = threading.Thread(target=boom, name="fw-test")
    t.start()
    t.join()
    err = capsys.readouterr().err
    assert "RuntimeError: could not reach [email] at [phone]" in err and EMAIL not in err
