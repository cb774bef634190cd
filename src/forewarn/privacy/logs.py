"""Keep email addresses and phone numbers out of logs and tracebacks.

:func:`install` (called by the CLI and the app) wraps the logging record factory, so every record from any
logger (forewarn's, uvicorn's, SQLAlchemy's, a library's) passes :class:`RedactFilter` before any handler sees
it, whatever handlers are configured later; it also redacts uncaught tracebacks (``sys.excepthook`` and
``threading.excepthook``). Message bodies cannot be recognised by pattern, so they are kept out at the source:
SQLAlchemy engines hide statement parameters (``hide_parameters``, :mod:`forewarn.state.db`), and forewarn
never logs a message, a ticket's text or a customer record.

>>> redact("mail ada.lovelace1@example.org or call +44 7700 900123 (ticket 2026-03-01 12:00, 1,000 sent)")
'mail [email] or call [phone] (ticket 2026-03-01 12:00, 1,000 sent)'
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# a run of digits with the separators phone numbers are written with, not touching letters, colons or more
# digits; then it must hold 9 to 15 digits (E.164's most), so dates, times and counts are left alone
PHONE_CANDIDATE = re.compile(r"(?<![\w:/.+-])(?:\+|00)?\(?\d[\d ()-]{5,}\d(?![\w:/-])")
MIN_PHONE_DIGITS, MAX_PHONE_DIGITS = 9, 15


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    if not MIN_PHONE_DIGITS <= digits <= MAX_PHONE_DIGITS or re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", text):
        return text
    return "[phone]"


def redact(text: str) -> str:
    """``text`` with email addresses and phone numbers replaced by ``[email]`` and ``[phone]``.

    >>> redact("+353123456789012 and (555) 000-1234, not 12345678, 2026-11-23 or 192.168.100.200:8000")
    '[phone] and [phone], not 12345678, 2026-11-23 or 192.168.100.200:8000'
    """
    return PHONE_CANDIDATE.sub(_phone, EMAIL.sub("[email]", text))


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactFilter(logging.Filter):
    """Redacts a record in place (its message, its arguments, its formatted traceback); never drops one.

    SQLAlchemy's result rows (its DEBUG level) are replaced whole. Arguments keep their shape (uvicorn's access log formats its own tuple); a non-string argument whose text
    could hold an address (an exception, a dict) is replaced by its redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG and record.name.startswith("sqlalchemy.engine"):
            # SQLAlchemy logs every result row at DEBUG: rows hold addresses and bodies; keep only the fact
            record.msg, record.args = "[result row hidden]", ()
            return True
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        elif record.msg is not None:
            record.msg = redact(str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(_safe_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _safe_arg(v) for k, v in record.args.items()}
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _safe_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float | bool):
        return value
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned  # keep the object (and its %r, %d) when nothing was found


_installed = threading.Lock()
_state: dict[str, bool] = {}


def install() -> None:
    """Redact every log record and uncaught traceback in this process from now on (idempotent)."""
    with _installed:
        if _state.get("installed"):
            return
        _state["installed"] = True
    redactor = RedactFilter()
    previous_factory = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous_factory(*args, **kwargs)
        redactor.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    previous_hook = sys.excepthook

    def excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            previous_hook(exc_type, exc, tb)
            return
        sys.stderr.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))

    sys.excepthook = excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        sys.stderr.write(redact(f"Exception in thread {name}:\n{text}"))

    threading.excepthook = thread_hook
