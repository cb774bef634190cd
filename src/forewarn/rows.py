"""One problem with one value of one input row: the error every reader and validator reports.

Shared by the signal readers (``forewarn.signals``) and the customer / service records (``forewarn.state``),
so a bad row is worded the same way wherever it comes in: file, line, field, what was expected, what was found.

>>> print(RowError("usage.csv", 3, "value", "a number", "lots", "not a number"))
usage.csv:3: field 'value': not a number; expected a number, got 'lots'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowError:
    """One problem with one value of one row: where it is, what was expected and what was found."""

    file: str
    line: int | None  # 1-based: CSV counts its header as line 1; Parquet gives the row number; API the index
    field: str
    expected: str
    got: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        got = "nothing" if self.got is None else repr(_clip(self.got))
        return f"{where}: field {self.field!r}: {self.message}; expected {self.expected}, got {got}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "expected": self.expected,
            "got": self.got,
            "message": self.message,
        }


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
