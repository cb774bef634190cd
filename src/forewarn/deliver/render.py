"""Rendering messages at delivery time from Jinja2 templates, in the customer's time zone and language.

Producers enqueue ``payload = {"template": "<name>", ...ids}`` with an empty body (a fan-out to a million
customers stays one ``INSERT .. SELECT``); the worker renders each message just before sending it.

Templates live in ``src/forewarn/deliver/templates``: ``<name>.<variant>.j2`` is used when present, else
``<name>.j2`` (a channel's variant is its name unless its declaration names another: :func:`template_names`). **Subject convention:** when the rendered text's first line starts with ``Subject:``, that line
is the subject and the rest (after one blank line) the body; otherwise the subject is empty (SMS, chat).
Compiled templates are cached by the Jinja environment, and the (name, channel) -> template choice too.

Context: ``customer`` (a :class:`~forewarn.deliver.channels.base.CustomerView`), ``message`` (channel, topic,
thread, ids), ``payload`` and its keys at top level, ``public_url``, plus whatever loaders registered with
:func:`register_context` add for templates whose name starts with their prefix (incidents supply ``incident``,
``update``, ``eta``; playbooks their finding). Filters ``fmt_datetime``, ``fmt_date`` and ``fmt_time`` show a
UTC time in the customer's zone and language (see :mod:`forewarn.deliver.locales`).

>>> from forewarn.deliver.channels.base import CustomerView
>>> ana = CustomerView("c1", name="Ana", timezone="Europe/Madrid", locale="es")
>>> r = render_template("example", "email", {"customer": ana, "when": "2026-03-02T08:05:00+00:00"})
>>> r.subject
'Hola Ana'
>>> r.body.strip()
'lunes, 2 de marzo de 2026, 09:05 (CET)'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from threading import Lock
from typing import Any

import jinja2
from sqlalchemy.orm import Session

from forewarn.deliver import locales
from forewarn.deliver.channels.base import channel_spec

TEMPLATE_DIR = Path(__file__).parent / "templates"

ContextLoader = Callable[[Session, Any], dict[str, Any]]
_LOADERS: list[tuple[str, ContextLoader]] = []


class TemplateMissing(LookupError):
    """No template for a message: a permanent failure (retrying will not make it appear)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    body: str


def register_context(template_prefix: str, loader: ContextLoader) -> None:
    """Add context for templates whose name starts with ``template_prefix``.

    ``loader(session, message)`` returns a dict merged into the template context; ``message`` is the
    ``OutboxMessage`` being sent. Loaders run per message: memoise shared lookups (the incident, its latest
    update) in :func:`batch_cache`, which lives for one worker batch. Registering the same prefix and loader
    twice is a no-op.
    """
    entry = (template_prefix, loader)
    if entry not in _LOADERS:
        _LOADERS.append(entry)


# packages that register template context on import; the worker imports them so that a bare
# ``forewarn worker`` process renders their templates
CONTEXT_PROVIDERS = ["forewarn.incidents", "forewarn.decide"]


def load_context_providers() -> list[str]:
    """Import the packages in ``CONTEXT_PROVIDERS``; returns those that could not be imported."""
    missing = []
    for name in CONTEXT_PROVIDERS:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def batch_cache(session: Session) -> dict[Any, Any]:
    """A dict that lives for one delivery batch (the worker clears it), for loaders to memoise lookups."""
    return session.info.setdefault("forewarn_render_cache", {})


def clear_batch_cache(session: Session) -> None:
    session.info.pop("forewarn_render_cache", None)


def _ctx_tz_locale(ctx: Any, tz: str | None, locale: str | None) -> tuple[str | None, str | None]:
    customer = ctx.get("customer")
    return (
        tz or getattr(customer, "timezone", None) or "UTC",
        locale or getattr(customer, "locale", None) or "en",
    )


@jinja2.pass_context
def _fmt_datetime(ctx: Any, value: Any, tz: str | None = None, locale: str | None = None) -> str:
    return locales.format_datetime(value, *_ctx_tz_locale(ctx, tz, locale))


@jinja2.pass_context
def _fmt_date(ctx: Any, value: Any, tz: str | None = None, locale: str | None = None) -> str:
    return locales.format_date(value, *_ctx_tz_locale(ctx, tz, locale))


@jinja2.pass_context
def _fmt_time(ctx: Any, value: Any, tz: str | None = None, locale: str | None = None) -> str:
    return locales.format_time(value, *_ctx_tz_locale(ctx, tz, locale))


@jinja2.pass_context
def _t(ctx: Any, key: str) -> str:
    return locales.phrase(key, _ctx_tz_locale(ctx, None, None)[1])


class Renderer:
    """A Jinja2 environment over the template folders, with the (name, channel) -> template choice cached."""

    def __init__(self, extra_dirs: list[Path] | None = None) -> None:
        dirs = [str(p) for p in (extra_dirs or [])] + [str(TEMPLATE_DIR)]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(dirs),
            autoescape=False,  # plain-text messages; HTML escaping would corrupt them
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=1000,
        )
        self.env.filters.update(fmt_datetime=_fmt_datetime, fmt_date=_fmt_date, fmt_time=_fmt_time)
        self.env.globals["t"] = _t
        self._chosen: dict[tuple[str, str], jinja2.Template] = {}
        self._lock = Lock()

    def template(self, name: str, channel: str) -> jinja2.Template:
        key = (name, channel)
        tpl = self._chosen.get(key)
        if tpl is None:
            names = template_names(name, channel)
            try:
                tpl = self.env.select_template(names)
            except jinja2.TemplatesNotFound:
                raise TemplateMissing(f"no template {' or '.join(names)} in {TEMPLATE_DIR}") from None
            with self._lock:
                self._chosen[key] = tpl
        return tpl

    def render(self, name: str, channel: str, context: dict[str, Any]) -> Rendered:
        return split_subject(self.template(name, channel).render(context))


def template_names(name: str, channel: str) -> list[str]:
    """The templates that can render ``name`` on ``channel``, in order: the channel's variant (its declared
    ``template``, else its name), then the shared one.

    >>> template_names("incident_open", "sms")
    ['incident_open.sms.j2', 'incident_open.j2']
    """
    spec = channel_spec(channel)
    variant = spec.template_variant if spec is not None else channel
    return [f"{name}.{variant}.j2", f"{name}.j2"]


def split_subject(text: str) -> Rendered:
    """Apply the ``Subject:`` first-line convention.

    >>> split_subject("Subject: Outage in Gent\\n\\nWe are on it.")
    Rendered(subject='Outage in Gent', body='We are on it.')
    >>> split_subject("Short SMS")
    Rendered(subject='', body='Short SMS')
    """
    if text.startswith("Subject:"):
        first, _, rest = text.partition("\n")
        if rest.startswith("\n"):
            rest = rest[1:]
        return Rendered(first[len("Subject:") :].strip(), rest.strip("\n"))
    return Rendered("", text.strip("\n"))


_DEFAULT: Renderer | None = None


def default_renderer() -> Renderer:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Renderer()
    return _DEFAULT


def render_template(name: str, channel: str, context: dict[str, Any]) -> Rendered:
    """Render template ``name`` for ``channel`` with a ready context (no database)."""
    return default_renderer().render(name, channel, context)


def message_context(
    session: Session | None, message: Any, customer: Any, public_url: str = ""
) -> dict[str, Any]:
    """The template context for one outbox message: payload, customer and the registered loaders' parts."""
    payload = dict(message.payload or {})
    name = payload.get("template", "")
    context: dict[str, Any] = {k: v for k, v in payload.items() if k != "template"}
    context.update(
        payload=payload,
        customer=customer,
        public_url=public_url,
        message={
            "id": message.id,
            "idempotency_key": message.idempotency_key,
            "channel": message.channel,
            "topic": message.topic,
            "thread_key": message.thread_key,
            "priority": message.priority,
            "incident_id": message.incident_id,
            "finding_id": message.finding_id,
        },
    )
    for prefix, loader in _LOADERS:
        if name.startswith(prefix) and session is not None:
            context.update(loader(session, message))
    return context


def render_message(
    session: Session | None,
    message: Any,
    customer: Any,
    *,
    renderer: Renderer | None = None,
    public_url: str = "",
) -> Rendered:
    """The subject and body to send for ``message``: as stored, or rendered from its payload's template.

    Raises :class:`TemplateMissing` when the named template does not exist.
    """
    payload = message.payload or {}
    name = payload.get("template")
    if message.body or not name:
        return Rendered(message.subject or "", message.body or "")
    context = message_context(session, message, customer, public_url)
    return (renderer or default_renderer()).render(name, message.channel, context)


def as_datetime(value: Any) -> datetime | None:
    """A datetime from a datetime or an ISO string (payloads are JSON)."""
    return locales.as_datetime(value)
