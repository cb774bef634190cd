"""Benchmark: signal ingestion into the embedded store (Parquet, JSONL) and over HTTP, vs DuckDB's own load.

Measures, each in its own process so that peak memory (ru_maxrss) is that phase's alone:

- ``reference``: DuckDB's own ``INSERT INTO signal_usage SELECT ... FROM read_parquet(file)`` into a fresh
  database (no validation, no deduplication): the floor forewarn is compared with;
- ``parquet``: ``forewarn.signals.ingest.ingest_paths`` on the same file (validation, unknown-customer check,
  dedupe by event_id), then the same file again (everything a duplicate);
- ``jsonl``: the same for a JSON Lines file;
- ``http``: ``POST /v1/signals`` in batches of 1,000 to uvicorn on loopback (4 client threads).

Customers are imported first (not timed in the ingest figure), as a real load would do.

Run: ``python bench/ingest.py`` (10M Parquet rows, 1M JSONL rows, 200k HTTP events), or smaller with
``--rows 1000000 --jsonl-rows 200000 --http-rows 50000``; one phase alone with e.g.
``--only http --http-rows 100000 --repeat 3``. Targets: Parquet >= 1M rows/s and within 2x of
DuckDB's own load; JSONL >= 200k rows/s; HTTP >= 50k events/s; peak memory < 2 GB.
The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PHASES = ("parquet", "jsonl", "http")


# -- data ---------------------------------------------------------------------------------------------------


def generate(workdir: Path, rows: int, jsonl_rows: int, http_rows: int, customers: int) -> dict[str, Any]:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(7)

    def frame(n: int, prefix: str) -> pl.DataFrame:
        df = pl.DataFrame(
            {
                "i": np.arange(n),
                "c": rng.integers(0, customers, n),
                "h": rng.integers(0, 180 * 24, n),
                "v": rng.gamma(2.0, 1.5, n),
            }
        )
        return df.select(
            event_id=pl.lit(prefix) + pl.col("i").cast(pl.String).str.pad_start(10, "0"),
            customer_id=pl.lit("c") + pl.col("c").cast(pl.String).str.pad_start(7, "0"),
            ts=pl.datetime(2026, 1, 1, time_zone="UTC") + pl.duration(hours=pl.col("h")),
            metric=pl.lit("data_gb"),
            value=pl.col("v"),
            unit=pl.lit("GB"),
            period=pl.lit("day"),
            service_id=pl.lit("internet"),
        )

    frame(rows, "p").write_parquet(workdir / "usage.parquet")
    j = frame(jsonl_rows, "j").with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    j.write_ndjson(workdir / "usage.jsonl")
    h = frame(http_rows, "h").with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    h.write_ndjson(workdir / "http.jsonl")
    ids = [f"c{i:07d}" for i in range(customers)]
    with open(workdir / "customers.jsonl", "w") as f:
        for cid in ids:
            f.write(
                json.dumps({"id": cid, "timezone": "Europe/Paris", "consent": {"email": {"*": True}}}) + "\n"
            )
    return {
        "parquet_mb": round((workdir / "usage.parquet").stat().st_size / 1e6, 1),
        "jsonl_mb": round((workdir / "usage.jsonl").stat().st_size / 1e6, 1),
    }


# -- phases (each runs in its own process) ------------------------------------------------------------------


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def fresh_ctx(home: Path) -> Any:
    from forewarn.config import Settings
    from forewarn.context import Context
    from forewarn.signals.ingest import ingest_paths
    from forewarn.state.db import upgrade

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    url = f"sqlite:///{home / 'state.db'}"
    upgrade(url)
    ctx = Context(Settings(home=home, database_url=url, unknown_customers="reject"))
    return ctx, ingest_paths


def phase_reference(workdir: Path) -> dict[str, Any]:
    import duckdb

    from forewarn.signals.schema import KINDS
    from forewarn.signals.store import _ddl

    db = workdir / "reference.duckdb"
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    con = duckdb.connect(str(db), config={"memory_limit": "1GB"})
    con.execute("SET TimeZone = 'UTC'").fetchall()
    kind = KINDS["usage"]
    con.execute(_ddl(kind)).fetchall()
    cols = ", ".join(kind.columns)
    t = time.perf_counter()
    n = con.execute(
        f"INSERT INTO {kind.table} SELECT {cols} FROM read_parquet('{workdir / 'usage.parquet'}')"
    ).fetchall()[0][0]
    con.execute("CHECKPOINT").fetchall()
    seconds = time.perf_counter() - t
    con.close()
    return {"rows": n, "seconds": seconds, "peak_mb": peak_mb()}


def phase_file(workdir: Path, name: str) -> dict[str, Any]:
    ctx, ingest_paths = fresh_ctx(workdir / f"home-{name}")
    t = time.perf_counter()
    customers = ingest_paths(ctx, [workdir / "customers.jsonl"])
    customers_s = time.perf_counter() - t
    ctx.signals  # noqa: B018 - open the store before timing
    path = workdir / f"usage.{name}"
    t = time.perf_counter()
    first = ingest_paths(ctx, [path])
    ctx.signals._con.execute("CHECKPOINT").fetchall()
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    again = ingest_paths(ctx, [path])
    again_s = time.perf_counter() - t
    assert first.rejected == 0 and again.new == 0, (first.errors[:3], again.new)
    stored = ctx.signals.count("usage")
    ctx.close()
    return {
        "rows": first.new,
        "seconds": seconds,
        "stored": stored,
        "reingest_seconds": again_s,
        "reingest_duplicates": again.duplicate,
        "customers": customers.new,
        "customers_seconds": customers_s,
        "peak_mb": peak_mb(),
    }


def phase_http(workdir: Path, batch: int, threads: int, auth: bool = True) -> dict[str, Any]:
    """POST the events; with ``auth`` as a client with a ``signals:write`` token (the product as shipped: token
    check, per-token rate limit, body limits), else to an app with those three taken out (the reference)."""
    import httpx

    from forewarn.state import tokens
    from forewarn.state.db import transaction

    ctx, ingest_paths = fresh_ctx(workdir / "home-http")
    ingest_paths(ctx, [workdir / "customers.jsonl"])
    with transaction(ctx.engine) as s:
        _, token = tokens.create(s, "bench", ["signals:write"], actor="cli:bench")
    ctx.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = workdir / "home-http"
    server_code = (
        "import uvicorn\n"
        "from forewarn.api.app import create_app\n"
        "from forewarn.config import Settings\n"
        "from forewarn.context import Context\n"
        f"s = Settings(home={str(home)!r}, database_url={'sqlite:///' + str(home / 'state.db')!r},"
        " unknown_customers='reject')\n"
        "app = create_app(Context(s))\n"
        + (
            ""
            if auth
            # the reference's caller is async like the real check: a plain function would run in the thread
            # pool and make the reference slower than the product
            else "from forewarn.api.auth import Caller, requires\n"
            "async def constant_caller():\n"
            "    return Caller('bench', None)\n"
            "app.dependency_overrides[requires('signals:write').dependency] = constant_caller\n"
            "app.user_middleware.clear()\n"
        )
        + f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning')\n"
    )
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    server = subprocess.Popen([sys.executable, "-c", server_code])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        lines = (workdir / "http.jsonl").read_text().splitlines()
        # the bodies are encoded before timing: the client shares the machine with the server
        bodies = [
            ('{"kind":"usage","events":[' + ",".join(lines[i : i + batch]) + "]}").encode()
            for i in range(0, len(lines), batch)
        ]
        counts = {"new": 0, "duplicate": 0, "rejected": 0, "failed": 0}
        lock = threading.Lock()
        latencies: list[float] = []

        def worker(mine: list[bytes]) -> None:
            with httpx.Client(base_url=base, timeout=60) as client:
                for body in mine:
                    t0 = time.perf_counter()
                    r = client.post("/v1/signals", content=body, headers=headers)
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt)
                        if r.status_code != 200:
                            counts["failed"] += 1
                            continue
                        for k in ("new", "duplicate", "rejected"):
                            counts[k] += r.json()[k]

        # one rejected event first (nothing stored): the server's first request pays one-time imports
        warm = b'{"kind":"usage","events":[{"event_id":"warm-up"}]}'
        assert httpx.post(base + "/v1/signals", content=warm, headers=headers, timeout=60).status_code == 422
        parts = [bodies[i::threads] for i in range(threads)]
        server_cpu = _cpu_seconds(server.pid)
        client_cpu = time.process_time()
        t = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(p,)) for p in parts]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        seconds = time.perf_counter() - t
        client_cpu = time.process_time() - client_cpu
        server_cpu = _cpu_seconds(server.pid) - server_cpu
        server_peak = _vm_hwm(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies.sort()
    return {
        "rows": counts["new"],
        "seconds": seconds,
        "failed_batches": counts["failed"],
        "batches": len(bodies),
        "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "latency_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
        # CPU seconds while timed: the two share the machine's cores
        "server_cpu_s": round(server_cpu, 2),
        "client_cpu_s": round(client_cpu, 2),
        "peak_mb": server_peak,
        "client_peak_mb": peak_mb(),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_hwm(pid: int) -> float:
    """Peak resident memory of process ``pid`` in MB, from /proc (no psutil needed)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


# -- driver -------------------------------------------------------------------------------------------------


def run_phase(args: argparse.Namespace, phase: str) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE), "--phase", phase, "--workdir", str(args.workdir)]
    cmd += ["--batch", str(args.batch), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="usage rows in the Parquet file")
    ap.add_argument("--jsonl-rows", type=int, default=1_000_000, help="usage rows in the JSONL file")
    ap.add_argument("--http-rows", type=int, default=200_000, help="events sent over HTTP")
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="events per HTTP request")
    ap.add_argument("--threads", type=int, default=4, help="HTTP client threads")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each phase; medians are reported")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["reference", "parquet", "jsonl", "http"])
    ap.add_argument("--only", nargs="*", default=[], choices=["reference", "parquet", "jsonl", "http"])
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase:
        fn = {
            "reference": lambda: phase_reference(args.workdir),
            "parquet": lambda: phase_file(args.workdir, "parquet"),
            "jsonl": lambda: phase_file(args.workdir, "jsonl"),
            "http": lambda: phase_http(args.workdir, args.batch, args.threads),
            # the reference of bench/api_auth.py: the same without token checks and limits
            "http-open": lambda: phase_http(args.workdir, args.batch, args.threads, auth=False),
        }[args.phase]
        print(json.dumps(fn()))
        return

    own_tmp = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fw-bench-ingest-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    run = [
        p
        for p in ("reference", "parquet", "jsonl", "http")
        if p not in args.skip and (not args.only or p in args.only)
    ]
    # only the files the phases run need
    if not {"reference", "parquet"} & set(run):
        args.rows = 0
    args.jsonl_rows *= "jsonl" in run
    args.http_rows *= "http" in run
    print(f"generating {args.rows:,} Parquet + {args.jsonl_rows:,} JSONL + {args.http_rows:,} HTTP rows ...")
    sizes = generate(args.workdir, args.rows, args.jsonl_rows, args.http_rows, args.customers)
    print(f"  files: {sizes}")
    results: dict[str, Any] = {"rows": args.rows, "jsonl_rows": args.jsonl_rows, "http_rows": args.http_rows}
    try:
        for phase in run:
            runs = [run_phase(args, phase) for _ in range(args.repeat)]
            med = {
                k: statistics.median(r[k] for r in runs)
                for k, v in runs[0].items()
                if isinstance(v, int | float)
            }
            med["rows_per_s"] = med["rows"] / med["seconds"]
            results[phase] = med
            extra = ""
            if "reingest_seconds" in med:
                rate = med["reingest_duplicates"] / med["reingest_seconds"]
                extra = f", re-ingest {rate:,.0f} rows/s (all duplicates)"
            print(
                f"{phase:9s}: {med['rows']:>12,.0f} rows in {med['seconds']:7.2f} s = "
                f"{med['rows_per_s']:>11,.0f} rows/s, peak {med['peak_mb']:,.0f} MB{extra}"
            )
    finally:
        if own_tmp:
            shutil.rmtree(args.workdir, ignore_errors=True)
    if "reference" in results and "parquet" in results:
        results["parquet_vs_duckdb"] = results["parquet"]["seconds"] / results["reference"]["seconds"]
        print(f"Parquet ingest takes {results['parquet_vs_duckdb']:.2f}x DuckDB's own read_parquet insert")
    targets = {
        "parquet >= 1M rows/s": results.get("parquet", {}).get("rows_per_s", 0) >= 1e6,
        "parquet within 2x of DuckDB": results.get("parquet_vs_duckdb", 99) <= 2,
        "jsonl >= 200k rows/s": results.get("jsonl", {}).get("rows_per_s", 0) >= 2e5,
        "http >= 50k events/s": results.get("http", {}).get("rows_per_s", 0) >= 5e4,
        "peak < 2 GB": all(
            results[p]["peak_mb"] < 2048 for p in ("parquet", "jsonl", "http") if p in results
        ),
    }
    # only the targets of the phases that ran
    ran = {"parquet within 2x of DuckDB": "reference" in results and "parquet" in results}
    targets = {
        k: v for k, v in targets.items() if ran.get(k, k.split()[0] in results or k.startswith("peak"))
    }
    for name, ok in targets.items():
        print(f"  {'met ' if ok else 'MISSED'}  {name}")
    results["targets"] = targets
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
