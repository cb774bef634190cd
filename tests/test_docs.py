"""The docs keep up with the code they describe."""

from pathlib import Path

from forewarn.signals.schema import KINDS

DOCS = Path(__file__).parents[1] / "docs"


def test_signal_docs_list_every_kind_and_field() -> None:
    text = (DOCS / "signals.md").read_text()
    for kind in KINDS.values():
        section = text.split(f"## `{kind.name}`", 1)
        assert len(section) == 2, f"docs/signals.md has no section for {kind.name}"
        body = section[1].split("\n## ", 1)[0]
        for field in kind.all_fields:
            assert f"| `{field.name}` |" in body, f"docs/signals.md: {kind.name}.{field.name} is missing"
