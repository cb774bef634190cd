"""The shape of the code: imports run one way between the stages, and production code never imports the simulator.

``ALLOWED`` is the one table of which stage may import which (a stage is a package or top-level module under
``src/forewarn``). Every import in the source, at module level or inside a function, is checked against it, so
an import that runs back up (``deliver`` -> ``decide``, ``web`` -> ``api``) fails here. Imports under
``if TYPE_CHECKING:`` are annotations, not dependencies, and are not counted (import-linter's
``exclude_type_checking_imports`` draws the same line). Modules found by name at run time (the trip-wire
registry, the renderer's context providers) are not imports and are not checked.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from forewarn.detect import registry
from forewarn.detect.base import TripWire
from forewarn.detect.registry import TRIP_WIRES

SRC = Path(__file__).resolve().parent.parent / "src" / "forewarn"

_BASE = {"timeutil", "config", "rows"}
_PIPELINE = {"state", "signals", "context", "detect", "deliver", "incidents", "decide", "measure"}
# stage -> the stages it may import. Read bottom-up: foundations, the stores, the pipeline, then the faces.
ALLOWED: dict[str, set[str]] = {
    "timeutil": set(),
    "rows": set(),
    "config": {"timeutil"},
    "state": {"timeutil", "config", "rows"},
    "signals": _BASE | {"state"},
    "context": _BASE | {"state", "signals"},
    "detect": _BASE | {"state", "signals", "context"},
    # the outbox, channels, consent and quiet hours: what deciding and incident notices hand their messages to
    "deliver": _BASE | {"state", "context"},
    "incidents": _BASE | {"state", "signals", "context", "detect", "deliver"},
    "decide": _BASE | {"state", "signals", "context", "detect", "deliver", "incidents"},
    # backtests and replays run the stages above on history
    "measure": _BASE | _PIPELINE - {"measure"},
    # the simulator writes ground truth in measure's format; nothing below imports it (see test_no_sim_imports)
    "sim": _BASE | {"state", "signals", "measure"},
    "cycle": _BASE | _PIPELINE,
    # redacting logs; a customer's data exported or erased from both stores
    "privacy": _BASE | {"state", "signals"},
    "web": _BASE | _PIPELINE,
    # the API mounts the dashboard and serves its data as JSON
    "api": _BASE | _PIPELINE | {"web", "cycle", "privacy"},
    "demo": _BASE | _PIPELINE | {"sim", "cycle", "api", "web"},
    "cli": _BASE | _PIPELINE | {"sim", "cycle", "api", "web", "demo", "privacy"},
}

# where importing the simulator is the point: the simulator itself, the demo and `forewarn simulate`
SIM_ALLOWED = ("sim/", "demo.py", "cli/simulate.py")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports(path: Path, code: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, module) of every runtime import in ``path`` (or in ``code`` read as if it were ``path``)."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]  # ("forewarn", "api") for api/app.py
    tree = ast.parse(path.read_text(encoding="utf-8") if code is None else code)
    skip = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "forewarn":  # from forewarn import x: x may be a stage
                for alias in node.names:
                    yield node.lineno, f"forewarn.{alias.name}"
            else:
                yield node.lineno, module


def stage_of(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def violations(stage: str, found: Iterator[tuple[int, str]]) -> list[tuple[int, str]]:
    """The imports of forewarn stages that ``stage`` may not import."""
    out = []
    for line, module in found:
        parts = module.split(".")
        if parts[0] != "forewarn" or len(parts) < 2:
            continue
        target = parts[1]
        if target != stage and target in ALLOWED and target not in ALLOWED[stage]:
            out.append((line, module))
    return out


def sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def test_the_table_is_an_order() -> None:
    """No cycles in ``ALLOWED`` itself: the stages can be listed so that each imports only earlier ones."""
    done: list[str] = []
    left = dict(ALLOWED)
    while left:
        ready = [s for s, deps in left.items() if deps <= set(done)]
        assert ready, f"ALLOWED has a cycle among {sorted(left)}"
        done += sorted(ready)
        for s in ready:
            del left[s]
    assert done.index("deliver") < done.index("decide") and done.index("web") < done.index("api")


def test_imports_follow_the_stage_order() -> None:
    problems = []
    for path in sources():
        if path.name == "__init__.py" and path.parent == SRC:
            continue
        stage = stage_of(path)
        if stage not in ALLOWED:
            problems.append(f"{path.relative_to(SRC)}: stage {stage!r} is not in ALLOWED; add it there")
            continue
        for line, module in violations(stage, imports(path)):
            problems.append(
                f"{path.relative_to(SRC)}:{line}: {stage} imports {module}, "
                f"but {stage} may import only {sorted(ALLOWED[stage])}"
            )
    assert not problems, "imports that run against the stage order:\n" + "\n".join(problems)


def test_no_sim_imports_in_production_code() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line}: imports {module}"
        for path in sources()
        if not str(path.relative_to(SRC)).startswith(SIM_ALLOWED)
        for line, module in imports(path)
        if module == "forewarn.sim" or module.startswith("forewarn.sim.")
    ]
    assert not offenders, "production code imports the simulator:\n" + "\n".join(offenders)


# how a module would write outbox rows itself: raw SQL, an ORM object, a Core insert of the table
_OUTBOX_WRITES = re.compile(
    r"INSERT\s+INTO\s+outbox\b|\bOutboxMessage\(|insert\(\s*(OutboxMessage|outbox_t)\b|"
    r"(OutboxMessage\.__table__|outbox_t)\.insert\(",
    re.IGNORECASE,
)


def test_the_outbox_has_one_writer() -> None:
    """Only ``deliver/outbox.py`` writes outbox rows (``enqueue``, and ``insert_select`` for set-based producers
    such as the incident notices); the simulator's bulk-loaded synthetic history is the one exception."""
    writers = [
        f"{path.relative_to(SRC)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for path in sources()
        if str(path.relative_to(SRC)) != "deliver/outbox.py"
        and not str(path.relative_to(SRC)).startswith("sim/")
        for text in [path.read_text(encoding="utf-8")]
        for m in _OUTBOX_WRITES.finditer(text)
        if path.name != "models.py"
    ]
    assert not writers, "outbox rows written outside forewarn.deliver.outbox:\n" + "\n".join(writers)


@pytest.mark.parametrize("name", sorted(TRIP_WIRES))
def test_every_trip_wire_keeps_the_protocol(name: str) -> None:
    """``score_history`` is declared once (``TripWire``) and every shipped wire has that very signature."""
    declared = inspect.signature(TripWire.score_history)
    wire = registry.load(name)
    assert isinstance(wire.name, str) and wire.kinds
    assert inspect.signature(type(wire).score_history) == declared, name


@pytest.mark.parametrize(
    ("code", "stage", "bad"),
    [
        ("from forewarn.decide.guardrails import decide\n", "deliver", True),
        ("def f():\n    from forewarn.sim.world import simulate\n", "measure", True),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from forewarn.context import Context\n",
            "signals",
            False,
        ),
        ("from forewarn.deliver.outbox import enqueue\n", "decide", False),
    ],
)
def test_the_checker_sees_back_edges(code: str, stage: str, bad: bool) -> None:
    """The checker itself: a back-edge (also one inside a function) is seen; a type-only import is not."""
    found = violations(stage, imports(SRC / stage / "_probe.py", code))
    assert bool(found) is bad, found
