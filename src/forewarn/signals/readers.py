"""Readers for signal files (CSV, JSONL, Parquet): raw rows in bounded Arrow chunks, with line numbers.

A reader does not judge values; it hands raw rows to validation (``forewarn.signals.validate``) with a
``__row`` column locating each row in its file: the 1-based line for CSV (the header is line 1) and JSONL, the
1-based row number for Parquet. CSV text and JSONL values arrive as text, Parquet values with their own types.

For CSV, ``__row`` counts records as if each took one line; when a file has errors, :meth:`Reader.relocate`
maps them to physical lines (a quoted value may span lines, and rows with the wrong number of values are
skipped by the parser).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "usage.csv"
>>> _ = p.write_text("event_id,customer_id,ts,metric,value\\ne1,c1,2026-01-01,data_gb,1.5\\n")
>>> r = open_reader(p)
>>> r.columns()
['event_id', 'customer_id', 'ts', 'metric', 'value']
>>> [t.to_pylist() for t, _ in r.chunks(["value"])]
[[{'__row': 2, 'value': '1.5'}]]
"""

from __future__ import annotations

import csv
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from forewarn.rows import RowError
from forewarn.signals.validate import q

FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
CHUNK_ROWS = 1_000_000
TEXT_BLOCK = 32 << 20  # bytes of CSV / JSONL read at a time


class UnsupportedFile(ValueError):
    """A path forewarn cannot read as signals."""


def file_format(path: Path) -> str:
    """``csv``, ``jsonl`` or ``parquet`` by the file's suffix.

    >>> file_format(Path("usage.parquet"))
    'parquet'
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UnsupportedFile(
            f"{path}: unsupported file type {path.suffix!r}; expected one of {', '.join(FORMATS)}"
        )
    return fmt


class Reader(ABC):
    """Base: iterate raw chunks of a file; ``progress_total`` is in the units ``chunks`` advances by."""

    format = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.row_errors: list[RowError] = []  # rows the reader itself could not split into fields
        self.rejected_rows = 0

    @abstractmethod
    def columns(self) -> list[str]:
        """The file's column names."""

    @property
    def progress_total(self) -> int:
        return self.path.stat().st_size

    @abstractmethod
    def chunks(self, columns: Sequence[str], chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[pa.Table, int]]:
        """Yield (table with ``__row`` and the wanted ``columns`` the file has, progress advance)."""

    def source_sql(self, view: str, columns: Sequence[str]) -> str:
        """SQL giving ``__row`` and the raw ``columns`` (those the file has) from a registered chunk."""
        have = [c for c in columns if c in set(self.columns())]
        return f"SELECT __row{''.join(', ' + q(c) for c in have)} FROM {view}"

    def native_sql(self, columns: Sequence[str]) -> str | None:
        """SQL reading the whole file in DuckDB itself (``__row`` and the raw ``columns``), when it can."""
        return None

    def source_types(self, view: str, columns: Sequence[str]) -> dict[str, str] | None:
        """DuckDB types of :meth:`source_sql`'s columns when known without asking DuckDB (None: ask)."""
        return None

    def relocate(self, errors: list[RowError]) -> list[RowError]:
        """``errors`` with their ``line`` set to the physical line in the file (a no-op but for CSV)."""
        return errors

    @abstractmethod
    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line, record) pairs, for small entity files (customers, services, dependencies)."""


class ParquetReader(Reader):
    format = "parquet"

    def columns(self) -> list[str]:
        return list(pq.ParquetFile(self.path).schema_arrow.names)

    @property
    def progress_total(self) -> int:
        return pq.ParquetFile(self.path).metadata.num_rows

    def chunks(self, columns: Sequence[str], chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[pa.Table, int]]:
        f = pq.ParquetFile(self.path)
        have = [c for c in columns if c in set(f.schema_arrow.names)]
        start = 1
        for batch in f.iter_batches(batch_size=chunk_rows, columns=have or None):
            n = batch.num_rows
            t = pa.Table.from_batches([batch]) if have else pa.table({})
            t = t.select(have).add_column(0, "__row", pa.array(np.arange(start, start + n, dtype=np.int64)))
            start += n
            yield t, n

    def native_sql(self, columns: Sequence[str]) -> str | None:
        # DuckDB reads Parquet in parallel and streams it; going through Arrow batches in Python costs ~2x
        have = [c for c in columns if c in set(self.columns())]
        path = str(self.path).replace("'", "''")
        cols = "".join(", " + q(c) for c in have)
        return (
            f"SELECT file_row_number + 1 AS __row{cols} FROM read_parquet('{path}', file_row_number = true)"
        )

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        yield from enumerate(pq.read_table(self.path).to_pylist(), start=1)


class _CountingFile(io.RawIOBase):
    """A binary file that counts the bytes read through it (for progress)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.read_bytes = f, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)  # type: ignore[attr-defined]
        self.read_bytes += n or 0
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


class CsvReader(Reader):
    format = "csv"

    def columns(self) -> list[str]:
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])

    def source_types(self, view: str, columns: Sequence[str]) -> dict[str, str] | None:
        header = set(self.columns())
        return {"__row": "BIGINT", **{c: "VARCHAR" for c in columns if c in header}}

    def chunks(self, columns: Sequence[str], chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[pa.Table, int]]:
        header = self.columns()
        have = [c for c in columns if c in set(header)]
        line = 2  # the header is line 1

        def on_invalid(row: Any) -> str:
            self.rejected_rows += 1
            if len(self.row_errors) < 1000:
                self.row_errors.append(
                    RowError(
                        str(self.path),
                        None,  # set by relocate()
                        "(row)",
                        f"{row.expected_columns} comma-separated values, as in the header",
                        row.text,
                        f"has {row.actual_columns} values",
                    )
                )
            return "skip"

        counting = _CountingFile(open(self.path, "rb"))  # noqa: SIM115 - closed below
        try:
            reader = pacsv.open_csv(
                counting,
                read_options=pacsv.ReadOptions(block_size=TEXT_BLOCK // 4, encoding="utf8"),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in header},
                    include_columns=have,
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            done = 0
            pending: list[pa.RecordBatch] = []  # batches are block-sized; chunks are chunk_rows
            for batch in reader:
                pending.append(batch)
                if sum(b.num_rows for b in pending) >= chunk_rows:
                    t, line = _with_rows(pending, line)
                    pending = []
                    yield t, counting.read_bytes - done
                    done = counting.read_bytes
            if pending:
                t, line = _with_rows(pending, line)
                yield t, counting.read_bytes - done
        finally:
            counting.close()

    def relocate(self, errors: list[RowError]) -> list[RowError]:
        if not errors:
            return errors
        # one pass with Python's csv module, only when there is something to report
        kept: list[int] = []  # physical first line of each record the Arrow parser kept
        skipped: list[int] = []  # and of each it skipped for having the wrong number of values
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            last = reader.line_num
            for rec in reader:
                start, last = last + 1, reader.line_num
                if not rec:
                    continue
                (kept if len(rec) == len(header) else skipped).append(start)
        out, k = [], 0
        for e in errors:
            if e.line is None and e.field == "(row)" and k < len(skipped):
                out.append(replace(e, line=skipped[k]))
                k += 1
            elif e.line is not None and 0 <= e.line - 2 < len(kept):
                out.append(replace(e, line=kept[e.line - 2]))
            else:
                out.append(e)
        return out

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for rec in reader:
                yield reader.line_num, {k: (v if v != "" else None) for k, v in rec.items() if k is not None}


def _with_rows(batches: list[pa.RecordBatch], first: int) -> tuple[pa.Table, int]:
    t = pa.Table.from_batches(batches)
    n = t.num_rows
    return t.add_column(0, "__row", pa.array(np.arange(first, first + n, dtype=np.int64))), first + n


class JsonlReader(Reader):
    """JSON Lines: one object per line. A chunk holds the raw lines (``__doc``); DuckDB extracts fields."""

    format = "jsonl"

    def columns(self) -> list[str]:
        # JSON objects may each have their own keys; report those of the first object
        with open(self.path, encoding="utf-8") as f:
            for text in f:
                if text.strip():
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        return []
                    return list(obj) if isinstance(obj, dict) else []
        return []

    def chunks(self, columns: Sequence[str], chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[pa.Table, int]]:
        line = 1
        rest = b""
        pending: list[pa.Table] = []
        size = 0
        with open(self.path, "rb") as f:
            while True:
                block = f.read(TEXT_BLOCK)
                if not block and not rest:
                    break
                data = rest + block
                if block:
                    cut = data.rfind(b"\n") + 1
                    data, rest = data[:cut], data[cut:]
                    if not data:
                        continue
                else:
                    rest = b""
                text = data.decode("utf-8", errors="replace")
                lines = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))
                if text.endswith("\n"):
                    lines = lines.slice(0, len(lines) - 1)
                n = len(lines)
                rows = pa.array(np.arange(line, line + n, dtype=np.int64))
                pending.append(pa.table({"__row": rows, "__doc": lines}))
                size += len(block)
                line += n
                if sum(t.num_rows for t in pending) >= chunk_rows:
                    yield pa.concat_tables(pending), size
                    pending, size = [], 0
        if pending:
            yield pa.concat_tables(pending), size

    def source_types(self, view: str, columns: Sequence[str]) -> dict[str, str] | None:
        types = {"__row": "BIGINT", **{c: "VARCHAR" for c in columns}, "__malformed": "VARCHAR"}
        if "lines" in columns:
            types["lines"] = "JSON"
        return types

    def source_sql(self, view: str, columns: Sequence[str]) -> str:
        strings = [c for c in columns if c != "lines"]
        paths = "[" + ", ".join("'$." + json_key(c) + "'" for c in strings) + "]"
        cols = [f"__v[{i + 1}] AS {q(c)}" for i, c in enumerate(strings)]
        if "lines" in columns:
            cols.append("json_extract(__d, '$.lines') AS \"lines\"")
        valid = "(CASE WHEN json_valid(__doc) THEN json_type(__doc) END) = 'OBJECT'"
        return (
            f"SELECT __row, {', '.join(cols)}, CASE WHEN __d IS NULL THEN __doc END AS __malformed FROM ("
            f"SELECT __row, __doc, __d, json_extract_string(__d, {paths}) AS __v FROM ("
            f"SELECT __row, __doc, CASE WHEN {valid} THEN __doc END AS __d FROM {view} "
            f"WHERE TRIM(__doc) NOT IN ('', chr(13))))"
        )

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self.path, encoding="utf-8") as f:
            for i, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except ValueError as e:
                    obj = _Malformed(str(e), text)
                yield i, obj


class _Malformed(dict):  # type: ignore[type-arg]
    """A line that is not JSON: carried as a record so the caller reports it with its line."""

    def __init__(self, error: str, text: str) -> None:
        super().__init__()
        self.error, self.text = error, text


def json_key(name: str) -> str:
    """A JSON path step for key ``name`` (quoted when it is not a plain identifier)."""
    return name if name.replace("_", "").isalnum() else '"' + name.replace('"', '\\"') + '"'


def open_reader(path: Path) -> Reader:
    """The reader for ``path`` by its suffix."""
    fmt = file_format(path)
    return {"csv": CsvReader, "jsonl": JsonlReader, "parquet": ParquetReader}[fmt](path)


def is_malformed(record: object) -> tuple[str, str] | None:
    """(error, text) when ``record`` from :meth:`Reader.records` was a line that is not JSON."""
    return (record.error, record.text) if isinstance(record, _Malformed) else None
