"""Email over SMTP (``smtplib``): plain, STARTTLS or implicit TLS, with optional AUTH, connections reused.

Each sending thread keeps one SMTP session open across messages and batches (a new TCP + EHLO (+ TLS + AUTH)
per message would cap throughput far below what a relay accepts); a dropped session is reopened once.

Every message carries ``Message-ID: <fw.<sha256(key)[:40]>@<sender domain>>`` (the same on every retry, so
mail systems see one message) and ``X-Idempotency-Key: <key>``; messages of one thread share
``In-Reply-To`` / ``References`` so mail clients show the series as one conversation.

SMTP outcomes: 2xx sent; a 5xx reply is permanent (dead letter); 4xx replies, timeouts and dropped connections
are retried.

>>> raw = compose(Delivery(1, "inc-7:u0:c1", "email", "ana@example.org", "Störung", "Hallo Ana", "c1",
...               thread_key="inc-7:c1"), "ops@example.com")
>>> b"X-Idempotency-Key: inc-7:u0:c1" in raw, b"Subject: =?utf-8?" in raw
(True, True)
"""

from __future__ import annotations

import hashlib
import quopri
import smtplib
import ssl
from email.header import Header
from email.utils import formatdate
from typing import Any

from forewarn.deliver.channels.base import CustomerView, Delivery, PooledChannel, SendResult


def message_id(key: str, domain: str) -> str:
    """A stable, RFC 5322-safe Message-ID for an idempotency key."""
    return f"<fw.{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


def _header(value: str) -> str:
    value = " ".join(value.splitlines())  # no header injection through subjects
    if value.isascii():
        return value
    return Header(value, "utf-8").encode()


def compose(delivery: Delivery, sender: str) -> bytes:
    """The raw RFC 5322 message (text/plain, UTF-8) with CRLF line ends."""
    domain = sender.rpartition("@")[2] or "localhost"
    body = delivery.body.replace("\r\n", "\n")
    if body.isascii() and all(len(line) < 990 for line in body.split("\n")):
        cte, payload = "7bit", body.encode()
    else:
        cte, payload = "quoted-printable", quopri.encodestring(body.encode("utf-8"))
    headers = [
        f"From: {_header(sender)}",
        f"To: {_header(delivery.address or '')}",
        f"Subject: {_header(delivery.subject)}",
        f"Date: {formatdate(usegmt=True)}",
        f"Message-ID: {message_id(delivery.idempotency_key, domain)}",
        f"X-Idempotency-Key: {_header(delivery.idempotency_key)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Transfer-Encoding: {cte}",
        "Auto-Submitted: auto-generated",
    ]
    if delivery.thread_key:
        thread_id = message_id("thread:" + delivery.thread_key, domain)
        headers += [
            f"X-Forewarn-Thread: {_header(delivery.thread_key)}",
            f"In-Reply-To: {thread_id}",
            f"References: {thread_id}",
        ]
    head = "\r\n".join(headers).encode()
    payload = payload.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return head + b"\r\n\r\n" + payload + (b"" if payload.endswith(b"\r\n") else b"\r\n")


class SmtpChannel(PooledChannel):
    """Send email through one SMTP relay."""

    name = "email"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 25,
        sender: str = "forewarn@localhost",
        starttls: bool = False,
        use_ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        concurrency: int = 1,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(concurrency)
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.use_ssl = starttls, use_ssl
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        self.connections_opened = 0  # observable: reuse means this stays at ~concurrency

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> SmtpChannel:
        s = settings.smtp
        for key, value in dict(
            host=s.host,
            port=s.port,
            sender=s.sender,
            starttls=s.starttls,
            use_ssl=s.ssl,
            username=s.username,
            password=s.password,
            timeout_s=s.timeout_s,
        ).items():
            options.setdefault(key, value)
        return cls(**options)

    def address_for(self, customer: CustomerView) -> str | None:
        return customer.email

    def _open(self) -> smtplib.SMTP:
        context = self.ssl_context or ssl.create_default_context()
        if self.use_ssl:
            conn: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=context
            )
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.ehlo()
            if self.starttls:
                conn.starttls(context=context)
                conn.ehlo()
            if self.username:
                conn.login(self.username, self.password or "")
        except Exception:
            conn.close()
            raise
        self.connections_opened += 1
        return self._track(conn)

    def _drop(self) -> None:
        conn = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if conn is not None:
            try:
                conn.close()
            finally:
                self._untrack(conn)

    def _close_conn(self, conn: Any) -> None:
        try:
            conn.quit()
        except smtplib.SMTPException:
            conn.close()

    def send(self, delivery: Delivery) -> SendResult:
        if not delivery.address or "@" not in delivery.address:
            return SendResult(
                delivery.id, ok=False, permanent=True, error=f"not an email address: {delivery.address!r}"
            )
        raw = compose(delivery, self.sender)
        for _try in range(2):
            conn = getattr(self._local, "smtp", None)
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._local.smtp = self._open()
                conn.sendmail(self.sender, [delivery.address], raw)
                return SendResult(delivery.id, ok=True)
            except smtplib.SMTPRecipientsRefused as exc:
                code, msg = next(iter(exc.recipients.values()))
                self._reset(conn)
                return self._reply(delivery, code, msg)
            except smtplib.SMTPResponseException as exc:
                self._reset(conn)
                return self._reply(delivery, exc.smtp_code, exc.smtp_error)
            except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError, OSError) as exc:
                self._drop()
                if reused:
                    continue  # the relay closed an idle session: reopen once
                return SendResult(delivery.id, ok=False, error=f"{type(exc).__name__}: {exc}")
            except smtplib.SMTPException as exc:
                self._drop()
                return SendResult(delivery.id, ok=False, error=f"{type(exc).__name__}: {exc}")
        return SendResult(delivery.id, ok=False, error="SMTP connection closed by relay")

    def _reset(self, conn: smtplib.SMTP | None) -> None:
        # after a refused transaction the session is still usable once reset
        try:
            if conn is not None:
                conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    @staticmethod
    def _reply(delivery: Delivery, code: int, msg: bytes | str) -> SendResult:
        text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
        error = f"SMTP {code}: {text}"
        return SendResult(delivery.id, ok=False, permanent=500 <= code < 600, error=error)
