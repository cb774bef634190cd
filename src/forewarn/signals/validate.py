"""Vectorised validation of raw signal rows, as DuckDB SQL built from the kind's schema.

Raw rows come from any reader (CSV and JSONL as text, Parquet with its own types). :func:`checked_sql` turns a
relation of raw rows into one with the kind's typed columns plus, per field, an error code that is NULL when
the value is fine. Only the (few) bad rows are ever looked at in Python, to word their errors.

Accepted values: numbers as numbers or numeric text; timestamps as ISO-8601 text (no zone means UTC) or epoch
numbers (seconds; values beyond 1e11 are read as milliseconds and beyond 1e14 as microseconds); dates as
``YYYY-MM-DD`` (a timestamp is cut to its date); invoice ``lines`` as a JSON list (a JSON string in CSV).

>>> import duckdb
>>> from forewarn.signals.schema import KINDS
>>> con = duckdb.connect()
>>> _ = con.execute("SET TimeZone = 'UTC'")
>>> src = "SELECT * FROM (VALUES (2, 'e1', 'c1', '2026-01-01', 'data_gb', '1.5'), " \\
...       "(3, 'e2', 'c1', 'yesterday', 'data_gb', 'lots')) " \\
...       "AS t(__row, event_id, customer_id, ts, metric, value)"
>>> types = {"event_id": "VARCHAR", "customer_id": "VARCHAR", "ts": "VARCHAR", "metric": "VARCHAR",
...          "value": "VARCHAR"}
>>> sql = checked_sql(KINDS["usage"], src, types)
>>> con.execute(f"SELECT __row, __ok, __e_ts, __e_value FROM ({sql}) ORDER BY __row").fetchall()
[(2, True, None, None), (3, False, 2, 2)]
"""

from __future__ import annotations

from forewarn.signals.schema import DUCKDB_TYPES, Field, SignalKind

# error codes in the __e_<field> columns
MISSING, MALFORMED, NOT_A_CHOICE, UNKNOWN_CUSTOMER = 1, 2, 3, 4

TEXT_TYPES = {"VARCHAR", "JSON", "BLOB"}
NUMERIC_PREFIXES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
)
NUMERIC_PREFIXES += ("UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "REAL")


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _is_text(t: str) -> bool:
    return t.upper() in TEXT_TYPES


def _is_numeric(t: str) -> bool:
    return t.upper().startswith(NUMERIC_PREFIXES)


def _epoch(v: str) -> str:
    """SQL turning epoch number ``v`` (seconds, or ms / us by magnitude) into TIMESTAMPTZ."""
    scaled = f"(CASE WHEN abs({v}) < 1e11 THEN {v} WHEN abs({v}) < 1e14 THEN {v} / 1e3 ELSE {v} / 1e6 END)"
    return f"(CASE WHEN isfinite({v}) THEN to_timestamp({scaled}) END)"


def typed_expr(f: Field, t: str, n: str | None, source_type: str | None) -> str:
    """SQL converting one raw value to field ``f``'s type; NULL when absent or bad.

    ``t`` is the raw value (trimmed, '' as NULL, when text), ``n`` the same read as a number (text sources
    only, for numbers and epoch timestamps), ``source_type`` the raw column's DuckDB type (None: absent).
    """
    target = DUCKDB_TYPES[f.type]
    if source_type is None:
        return f"CAST(NULL AS {target})"
    text = _is_text(source_type)
    if f.type == "str":
        return t if text else f"CAST({t} AS VARCHAR)"
    if f.type == "float":
        v = n if text and n else f"TRY_CAST({t} AS DOUBLE)"
        return f"(CASE WHEN isfinite({v}) THEN {v} END)"
    if f.type in ("int", "bool"):
        return f"TRY_CAST({t} AS {target})"
    if f.type == "timestamp":
        if text:
            return f"COALESCE(TRY_CAST({t} AS TIMESTAMPTZ), {_epoch(n or f'TRY_CAST({t} AS DOUBLE)')})"
        if _is_numeric(source_type):
            return _epoch(f"CAST({t} AS DOUBLE)")
        return f"TRY_CAST({t} AS TIMESTAMPTZ)"
    if f.type == "date":
        if text:
            return f"COALESCE(TRY_CAST({t} AS DATE), CAST(TRY_CAST({t} AS TIMESTAMPTZ) AS DATE))"
        return f"TRY_CAST({t} AS DATE)"
    if f.type == "lines":
        if text:
            return f"TRY_CAST(TRY_CAST({t} AS JSON) AS {target})"
        return f"TRY_CAST({t} AS {target})"
    raise ValueError(f"no conversion for field type {f.type!r}")


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def checked_sql(kind: SignalKind, source_sql: str, source_types: dict[str, str]) -> str:
    """SQL over ``source_sql`` (raw rows with a ``__row`` column) giving typed fields and error codes.

    Output columns: ``__row``, each field of ``kind`` typed, ``__raw_<field>`` (the raw value as text, for
    error messages), ``__e_<field>`` (NULL, or MISSING / MALFORMED / NOT_A_CHOICE) and ``__ok``. A source
    column ``__malformed`` (non-NULL for a row the reader could not parse) is kept and fails the row.

    Three layers keep each raw value's clean-up computed once (and the SQL small, which keeps planning
    cheap for small API batches): raw -> trimmed text / number -> typed -> error codes.
    """
    raw, typed, outer, codes = ["__row"], ["__row"], ["*"], []
    for f in kind.all_fields:
        st = source_types.get(f.name)
        col, t, n = f"src.{q(f.name)}", q("__t_" + f.name), q("__n_" + f.name)
        if st is None:
            raw.append(f"CAST(NULL AS VARCHAR) AS {q('__raw_' + f.name)}")
            raw.append(f"CAST(NULL AS VARCHAR) AS {t}")
        elif _is_text(st):
            raw.append(f"CAST({col} AS VARCHAR) AS {q('__raw_' + f.name)}")
            raw.append(f"NULLIF(TRIM(CAST({col} AS VARCHAR)), '') AS {t}")
        else:
            raw.append(f"CAST({col} AS VARCHAR) AS {q('__raw_' + f.name)}")
            raw.append(f"{col} AS {t}")
        number = st is not None and _is_text(st) and f.type in ("float", "timestamp")
        if number:
            raw.append(f"TRY_CAST(NULLIF(TRIM(CAST({col} AS VARCHAR)), '') AS DOUBLE) AS {n}")
        typed.append(f"{typed_expr(f, t, n if number else None, st)} AS {q(f.name)}")
        typed.append(f"({t} IS NOT NULL) AS {q('__p_' + f.name)}")
        typed.append(q("__raw_" + f.name))
        v, p = q(f.name), q("__p_" + f.name)
        cases = [f"WHEN {p} AND {v} IS NULL THEN {MALFORMED}"]
        if f.required:
            cases.append(f"WHEN {v} IS NULL THEN {MISSING}")
        if f.choices:
            cases.append(f"WHEN {v} NOT IN ({', '.join(_literal(c) for c in f.choices)}) THEN {NOT_A_CHOICE}")
        code = q("__e_" + f.name)
        outer.append(f"CAST(CASE {' '.join(cases)} END AS TINYINT) AS {code}")
        codes.append(code)
    if "__malformed" in source_types:  # the reader could not parse the row (a JSONL line that is not JSON)
        raw.append("src.__malformed")
        typed.append("__malformed")
        codes.append("__malformed")
    ok = " AND ".join(f"{c} IS NULL" for c in codes)
    raw_sql = f"SELECT {', '.join(raw)} FROM ({source_sql}) AS src"
    typed_sql = f"SELECT {', '.join(typed)} FROM ({raw_sql})"
    return f"SELECT {', '.join(outer)}, ({ok}) AS __ok FROM ({typed_sql})"


def ids_sql(kind: SignalKind, source_sql: str, source_types: dict[str, str]) -> str:
    """SQL giving only ``event_id`` and ``customer_id`` (when the kind has it) of ``source_sql``, cleaned as
    :func:`checked_sql` cleans them but not validated: a cheap scan for counting and deduplicating.

    >>> import duckdb
    >>> from forewarn.signals.schema import KINDS
    >>> sql = ids_sql(KINDS["usage"], "SELECT ' e1 ' AS event_id, 7 AS customer_id", {"event_id": "VARCHAR",
    ...                                                                             "customer_id": "INTEGER"})
    >>> duckdb.sql(sql).fetchall()
    [('e1', '7')]
    """
    out = []
    for name in ("event_id", "customer_id"):
        if name not in kind.columns:
            continue
        st, col = source_types.get(name), f"src.{q(name)}"
        if st is None:
            expr = "CAST(NULL AS VARCHAR)"
        elif _is_text(st):
            expr = f"NULLIF(TRIM(CAST({col} AS VARCHAR)), '')"
        else:
            expr = f"CAST({col} AS VARCHAR)"
        out.append(f"{expr} AS {q(name)}")
    return f"SELECT {', '.join(out)} FROM ({source_sql}) AS src"


def describe(kind: SignalKind, fld: str, code: int) -> tuple[str, str]:
    """(message, expected) for error ``code`` on field ``fld`` of ``kind``."""
    if fld == "customer_id" and code == UNKNOWN_CUSTOMER:
        return "unknown customer", "the id of a customer in the state store (or --unknown-customers create)"
    f = kind.field(fld)
    if code == MISSING:
        return "required value missing", f.expected
    if code == NOT_A_CHOICE:
        return "not an accepted value", f.expected
    return f"not {'a valid ' + f.type if f.type != 'lines' else 'valid line items'}", f.expected
