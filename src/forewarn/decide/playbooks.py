"""Playbooks in YAML: when a finding matches, what to do, and the guardrails shared by every playbook.

A playbook file holds an optional ``guardrails:`` section and a list of ``playbooks:``::

    guardrails:
      budget: {max_messages: 3, window: 7d}
      min_confidence: 0.5
    playbooks:
      - name: data-drop
        mode: live                      # off | shadow | live
        when:
          kind: usage                   # a trip wire name, or "outage" for incident notices
          score: {gte: 3}
          customer: {segment: [consumer]}
        then:
          - notify: {channels: [sms, email], template: playbook_usage, priority: normal}
          - task: {assignee: "team:retention", title: "Call the customer", due: 2d}
        cooldown: 14d
        expiry: 3d
        holdout: 0.1

``load_playbooks`` validates with pydantic and turns every error into one line naming the file, the line (from
YAML's node marks), the field path and what was expected:

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "pb.yaml"
>>> _ = p.write_text("playbooks:\\n  - name: x\\n    mode: loud\\n    when: {kind: usage}\\n"
...                  "    then: [{notify: {template: playbook_usage}}]\\n")
>>> try:
...     load_playbooks(p)
... except PlaybookError as e:
...     print(str(e).split("pb.yaml:")[1])
3: playbooks[0].mode: expected 'off', 'shadow' or 'live' (got 'loud')
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from forewarn.deliver.channels.base import available_channels, channel_spec
from forewarn.deliver.outbox import PRIORITIES
from forewarn.deliver.render import TEMPLATE_DIR, template_names
from forewarn.timeutil import parse_duration

PRIORITY_RANK: dict[str, int] = {p: i for i, p in enumerate(PRIORITIES)}
OUTAGE_KIND = "outage"
# What a finding kind is about when neither the finding nor the playbook says (the consent and ticket topic).
KIND_TOPIC: dict[str, str] = {
    "usage": "usage",
    "cadence": "account",
    "billing": "billing",
    "devices": "device",
    "schedule": "account",
    "opportunity": "offer",
    OUTAGE_KIND: "outage",
}
# Finer topics by condition prefix, for findings stored without theirs (the state store keeps no topic).
CONDITION_TOPIC: dict[str, str] = {
    "schedule:renewal_due": "account",
    "schedule:card_expiry": "billing",
    "schedule:maintenance": "outage",
    "schedule:shipment_late": "shipping",
}


def topic_of(kind: str, condition: str) -> str:
    """The consent / ticket topic of a finding known only by kind and condition.

    >>> topic_of("schedule", "schedule:card_expiry:2026-04-30"), topic_of("devices", "device:D1")
    ('billing', 'device')
    """
    for prefix, topic in CONDITION_TOPIC.items():
        if condition.startswith(prefix):
            return topic
    return KIND_TOPIC.get(kind, kind)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """A numeric condition: ``{gte: 3}``, ``{gt: 0.5, lte: 10}``."""

    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def test(self, x: float) -> bool:
        return (
            (self.gte is None or x >= self.gte)
            and (self.gt is None or x > self.gt)
            and (self.lte is None or x <= self.lte)
            and (self.lt is None or x < self.lt)
        )


def _listify(v: Any) -> Any:
    return [v] if isinstance(v, str | int | float | bool) else v


StrList = Annotated[list[str], BeforeValidator(_listify)]


class CustomerFilter(_Strict):
    """Conditions on who the customer is; each list means "one of"."""

    segment: StrList | None = None
    plan: StrList | None = None
    region: StrList | None = None
    # customer attributes: a value or a list of accepted values
    attributes: dict[str, Any] = Field(default_factory=dict)

    def test(self, customer: dict[str, Any]) -> bool:
        for name in ("segment", "plan", "region"):
            allowed = getattr(self, name)
            if allowed is not None and customer.get(name) not in allowed:
                return False
        attrs = customer.get("attributes") or {}
        for key, want in self.attributes.items():
            have = attrs.get(key)
            if isinstance(want, list):
                if have not in want:
                    return False
            elif have != want:
                return False
        return True


class When(_Strict):
    """Which findings a playbook acts on."""

    kind: str = Field(
        description="trip wire name (usage, cadence, billing, devices, schedule, opportunity) or outage"
    )
    condition: str | None = Field(None, description="glob on the finding's condition, e.g. 'usage:drop:*'")
    score: Range | None = None
    confidence: Range | None = None
    severity: StrList | None = None
    customer: CustomerFilter = Field(default_factory=CustomerFilter)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        from forewarn.detect.registry import TRIP_WIRES

        known = [*TRIP_WIRES, OUTAGE_KIND]
        if kind not in known:
            raise ValueError(f"expected one of {', '.join(known)} (got {kind!r})")
        return kind

    def matches(self, finding: dict[str, Any], customer: dict[str, Any]) -> bool:
        """Does ``finding`` (a FINDINGS_SCHEMA row as a dict) about ``customer`` meet every condition?"""
        if finding["kind"] != self.kind:
            return False
        if self.condition is not None and not fnmatch.fnmatchcase(finding["condition"], self.condition):
            return False
        if self.score is not None and not self.score.test(finding["score"]):
            return False
        if self.confidence is not None and not self.confidence.test(finding["confidence"]):
            return False
        if self.severity is not None and finding.get("severity") not in self.severity:
            return False
        return self.customer.test(customer)


class Notify(_Strict):
    """Send the customer a message on the first channel they consented to, in this order."""

    # declared channels (``forewarn.deliver.channels.base.register_channel``: built-in or a plug-in's)
    channels: list[str] = Field(default_factory=lambda: ["email"], min_length=1)
    template: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    priority: Literal["critical", "high", "normal", "low"] = "normal"
    # the consent / ticket topic; default: the finding's own topic
    topic: str | None = None

    @field_validator("channels")
    @classmethod
    def _declared_channels(cls, channels: list[str]) -> list[str]:
        known = available_channels()
        for name in channels:
            if name not in known:
                raise ValueError(f"expected channels among {', '.join(known)} (got {name!r})")
        return channels


class Task(_Strict):
    """A task for a team or a person (call the customer, a "plan B" goodwill offer)."""

    assignee: str = Field(min_length=1, description="team:<name> or person:<name>")
    title: str = Field(min_length=1)
    due: Duration = timedelta(days=1)
    # a template for the task's instructions (optional)
    template: str | None = None


class Webhook(_Strict):
    """Call an automation that fixes the problem (reroute, replace a device)."""

    url: str = Field(pattern=r"^https?://")
    payload: dict[str, Any] = Field(default_factory=dict)


class Action(_Strict):
    """One step: exactly one of ``notify``, ``task`` or ``webhook``."""

    notify: Notify | None = None
    task: Task | None = None
    webhook: Webhook | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        set_ = [n for n in ("notify", "task", "webhook") if getattr(self, n) is not None]
        if len(set_) != 1:
            raise ValueError(
                f"expected exactly one of notify, task or webhook (got {', '.join(set_) or 'none'})"
            )
        return self

    @property
    def type(self) -> str:
        return "notify" if self.notify else "task" if self.task else "webhook"


class Playbook(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=100)
    description: str = ""
    mode: Literal["off", "shadow", "live"] = "shadow"
    when: When
    then: list[Action] = Field(min_length=1)
    cooldown: Duration = timedelta(days=7)
    expiry: Duration = timedelta(days=3)
    holdout: float = Field(0.0, ge=0.0, lt=1.0)
    # below this confidence a decision waits for a person (status held); default: the guardrails' value
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _channels_carry_the_topic(self) -> Playbook:
        topic = self.topic_for(None)
        for a in self.then:
            for name in a.notify.channels if a.notify else ():
                spec = channel_spec(name)
                if spec is not None and not spec.carries(topic):
                    carried = ", ".join(sorted(spec.topics or ()))
                    raise ValueError(
                        f"expected a channel that carries topic {topic!r} ({name} carries {carried})"
                    )
        return self

    def topic_for(self, finding_topic: str | None) -> str:
        for a in self.then:
            if a.notify and a.notify.topic:
                return a.notify.topic
        return finding_topic or KIND_TOPIC.get(self.when.kind, self.when.kind)


class Budget(_Strict):
    """The fatigue budget: at most ``max_messages`` proactive messages per customer in any ``window``.

    ``priority_limits``: a message of a priority goes only while fewer than that many went in the window, so
    slots stay free for what matters more (a critical outage notice outranks an upsell).
    """

    max_messages: int = Field(3, ge=1)
    window: Duration = timedelta(days=7)
    priority_limits: dict[Literal["critical", "high", "normal", "low"], int] = Field(default_factory=dict)
    # what does not fit: dropped, or folded into a digest (recorded, status suppressed, reason says so)
    overflow: Literal["drop", "digest"] = "drop"

    def limit(self, priority: str) -> int:
        default = {"critical": self.max_messages, "high": self.max_messages}.get(
            priority, max(1, self.max_messages - (1 if priority == "normal" else 2))
        )
        return min(self.max_messages, self.priority_limits.get(priority, default))  # type: ignore[call-overload]


class MassSend(_Strict):
    """The circuit breaker: a playbook that would message more than ``share`` of the known customers (and at
    least ``minimum``) in one live run is held for a person's approval instead. A broken feed or a bad rule
    looks like a sudden mass event; a real one is approved in one command. Outage notices are exempt."""

    share: float = Field(0.05, gt=0.0, le=1.0)
    minimum: int = Field(50, ge=1)


class Guardrails(_Strict):
    budget: Budget = Field(default_factory=Budget)
    mass_send: MassSend = Field(default_factory=MassSend)
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)
    # topics that need an explicit opt-in; others are allowed unless the customer opted out. None: the
    # settings' ``delivery.explicit_consent_topics`` (the default the worker and the notices use too)
    explicit_consent_topics: StrList | None = None
    # None: take ``delivery.critical_overrides_quiet_hours`` from the settings
    critical_overrides_quiet_hours: bool | None = None


class PlaybookFile(_Strict):
    guardrails: Guardrails | None = None
    playbooks: list[Playbook] = Field(default_factory=list)


@dataclass(frozen=True)
class PlaybookSet:
    """Every playbook from one or more files, and the one guardrails section they share."""

    playbooks: tuple[Playbook, ...]
    guardrails: Guardrails
    sources: tuple[str, ...] = ()

    def active(self) -> list[Playbook]:
        return [p for p in self.playbooks if p.mode != "off"]

    def by_name(self, name: str) -> Playbook:
        for p in self.playbooks:
            if p.name == name:
                return p
        raise KeyError(name)


class PlaybookError(ValueError):
    """Invalid playbook file(s); ``problems`` lists ``(file, line, field, message)``."""

    def __init__(self, problems: Sequence[tuple[str, int, str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"{f}:{line}: {field}: {msg}" for f, line, field, msg in self.problems))


# ---- YAML node marks -> line numbers ----


def _node_at(root: yaml.Node | None, loc: Sequence[int | str]) -> tuple[yaml.Node | None, bool]:
    """The deepest node on ``loc``'s path, and whether the whole path was found."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    nxt = v
                    break
            if nxt is None:
                return node, False
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node, False
    return node, True


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _expected(err: dict[str, Any], value_node: yaml.Node | None) -> str:
    kind, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    got = f" (got {err['input']!r})" if kind not in ("missing", "extra_forbidden") and "input" in err else ""
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error":
        options = re.findall(r"'[^']*'", ctx.get("expected", ""))
        if options:
            listed = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
            return f"expected {listed}{got}"
    if kind == "value_error":
        text = str(ctx.get("error", msg))
        return text if text.startswith("expected") or ": expected" in text else f"expected {text}"
    if kind == "string_pattern_mismatch":
        return f"expected text matching {ctx.get('pattern')}{got}"
    return msg.replace("Input should be", "expected").replace("Value should", "expected") + got


def _problems(source: str, root: yaml.Node | None, exc: ValidationError) -> list[tuple[str, int, str, str]]:
    out = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        node, found = _node_at(root, loc)
        line = node.start_mark.line + 1 if node is not None else 1
        if (
            err["type"] == "extra_forbidden"
            and isinstance(node, yaml.MappingNode) is False
            and root is not None
        ):
            # point at the unknown key itself
            parent, _ = _node_at(root, loc[:-1])
            if isinstance(parent, yaml.MappingNode):
                for k, _v in parent.value:
                    if k.value == str(loc[-1]):
                        line = k.start_mark.line + 1
        message = _expected(err, node if found else None)
        if err["type"] == "extra_forbidden":
            parent_model_fields = _known_fields(loc[:-1])
            if parent_model_fields:
                message += f"; expected one of {', '.join(parent_model_fields)}"
        out.append((source, line, _path(loc), message))
    return out


def _known_fields(loc: Sequence[int | str]) -> list[str]:
    """The field names the model at ``loc`` accepts (for 'unknown field' messages)."""
    model: Any = PlaybookFile
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = _model_in(ann)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# ---- loading ----


def parse_playbook_text(text: str, source: str = "<string>") -> tuple[PlaybookFile, yaml.Node | None]:
    """Parse and validate one file's text; raises ``PlaybookError``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        line = (e.problem_mark.line + 1) if e.problem_mark else 1
        raise PlaybookError([(source, line, "(yaml)", f"expected valid YAML: {e.problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PlaybookError(
            [(source, 1, "(top level)", "expected a mapping with 'playbooks:' (and 'guardrails:')")]
        )
    try:
        parsed = PlaybookFile.model_validate(data)
    except ValidationError as e:
        raise PlaybookError(_problems(source, root, e)) from None
    problems = []
    for i, pb in enumerate(parsed.playbooks):
        for j, action in enumerate(pb.then):
            if action.notify is None:
                continue
            for channel in action.notify.channels:
                if not template_exists(action.notify.template, channel):
                    loc = ["playbooks", i, "then", j, "notify", "template"]
                    node, _ = _node_at(root, loc)
                    problems.append(
                        (
                            source,
                            node.start_mark.line + 1 if node else 1,
                            _path(loc),
                            f"expected a template "
                            f"{' or '.join(template_names(action.notify.template, channel))} in "
                            f"{TEMPLATE_DIR} (not found)",
                        )
                    )
    if problems:
        raise PlaybookError(problems)
    return parsed, root


def template_exists(name: str, channel: str) -> bool:
    """Is there a template ``name`` for ``channel`` (its own variant, or the shared ``name.j2``)?"""
    return any((TEMPLATE_DIR / candidate).exists() for candidate in template_names(name, channel))


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        else:
            out.append(p)
    return out


def load_playbooks(*paths: str | Path) -> PlaybookSet:
    """Load, validate and merge playbook files (or folders of ``*.yaml``) into one ``PlaybookSet``.

    Names must be unique across files; at most one file may define ``guardrails:``. Every problem in every
    file is reported at once.
    """
    problems: list[tuple[str, int, str, str]] = []
    playbooks: list[Playbook] = []
    seen: dict[str, tuple[str, int]] = {}
    guardrails: tuple[Guardrails, str, int] | None = None
    files = _files(paths)
    if not files:
        raise PlaybookError(
            [(", ".join(map(str, paths)) or "(none)", 1, "(files)", "expected playbook YAML files")]
        )
    for path in files:
        if not path.exists():
            problems.append(
                (
                    str(path),
                    1,
                    "(file)",
                    "no such file or folder; put playbook YAML files there "
                    "(copy examples/playbooks from the source tree to start)",
                )
            )
            continue
        try:
            text = path.read_text()
        except OSError as e:
            problems.append((str(path), 1, "(file)", f"expected a readable file ({e.strerror})"))
            continue
        try:
            parsed, root = parse_playbook_text(text, str(path))
        except PlaybookError as e:
            problems += e.problems
            continue
        if parsed.guardrails is not None:
            node, _ = _node_at(root, ["guardrails"])
            line = node.start_mark.line + 1 if node else 1
            if guardrails is not None:
                problems.append(
                    (
                        str(path),
                        line,
                        "guardrails",
                        "expected one guardrails section across all files "
                        f"(also in {guardrails[1]}:{guardrails[2]})",
                    )
                )
            else:
                guardrails = (parsed.guardrails, str(path), line)
        for i, pb in enumerate(parsed.playbooks):
            node, _ = _node_at(root, ["playbooks", i, "name"])
            line = node.start_mark.line + 1 if node else 1
            if pb.name in seen:
                f, ln = seen[pb.name]
                problems.append(
                    (
                        str(path),
                        line,
                        f"playbooks[{i}].name",
                        f"expected a unique name ({pb.name!r} is also at {f}:{ln})",
                    )
                )
            seen[pb.name] = (str(path), line)
            playbooks.append(pb)
    if problems:
        raise PlaybookError(problems)
    return PlaybookSet(
        playbooks=tuple(playbooks),
        guardrails=guardrails[0] if guardrails else Guardrails(),
        sources=tuple(map(str, files)),
    )
