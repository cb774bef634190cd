"""Benchmark: what API tokens cost the ingestion API (``POST /v1/signals``, batches of 1,000, 4 client threads).

Two servers, each a fresh uvicorn process on loopback over the same customers and events (bench/ingest.py's
``http`` phase):

- ``auth``: the API as shipped: the client sends a ``signals:write`` token; the server checks it (hash,
  in-process cache), takes a token from its rate-limit bucket, throttles the last-used write, and runs the
  body-size middleware;
- ``open``: the same app with the token check replaced by a constant caller and the body-size middleware
  removed: the reference.

Runs alternate (open, auth, auth, open, ...) so that a change in the machine's load hits both alike; the
figures are medians, and the ratio is auth / open (events/s) and auth - open (p99). Target: overhead < 10%.

Run: ``python bench/api_auth.py`` (200k events, 3 runs each) or ``--http-rows 100000 --repeat 5``.
The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

INGEST = Path(__file__).resolve().with_name("ingest.py")


def _ingest() -> Any:
    spec = importlib.util.spec_from_file_location("bench_ingest", INGEST)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(workdir: Path, phase: str, batch: int, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, str(INGEST), "--phase", phase, "--workdir", str(workdir)]
    cmd += ["--batch", str(batch), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["events_per_s"] = result["rows"] / result["seconds"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--http-rows", type=int, default=200_000, help="events sent per run")
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="events per request")
    ap.add_argument("--threads", type=int, default=4, help="client threads")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each server; medians are reported")
    args = ap.parse_args()

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    workdir = Path(tempfile.mkdtemp(prefix="fw-bench-auth-"))
    try:
        _ingest().generate(workdir, 0, 0, args.http_rows, args.customers)
        results: dict[str, list[dict[str, Any]]] = {"open": [], "auth": []}
        for i in range(args.repeat):
            order = ("open", "auth") if i % 2 == 0 else ("auth", "open")
            for name in order:
                r = run(workdir, "http" if name == "auth" else "http-open", args.batch, args.threads)
                assert r["failed_batches"] == 0 and r["rows"] == args.http_rows, r
                results[name].append(r)
                print(
                    f"  run {i + 1} {name:4s}: {r['events_per_s']:>9,.0f} events/s, "
                    f"p50 {r['latency_p50_ms']:6.1f} ms, p99 {r['latency_p99_ms']:6.1f} ms, "
                    f"server CPU {r['server_cpu_s']:.2f} s"
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    summary: dict[str, Any] = {
        name: {
            "events_per_s": round(med(name, "events_per_s")),
            "latency_p50_ms": med(name, "latency_p50_ms"),
            "latency_p99_ms": med(name, "latency_p99_ms"),
            "server_cpu_s": med(name, "server_cpu_s"),
        }
        for name in ("open", "auth")
    }
    ratio = summary["auth"]["events_per_s"] / summary["open"]["events_per_s"]
    summary["auth_vs_open_events_per_s"] = round(ratio, 3)
    summary["overhead_pct"] = round(100 * (1 - ratio), 1)
    summary["p99_delta_ms"] = round(summary["auth"]["latency_p99_ms"] - summary["open"]["latency_p99_ms"], 1)
    summary["target_overhead_under_10pct"] = summary["overhead_pct"] < 10
    print(
        f"median of {args.repeat}: open {summary['open']['events_per_s']:,} events/s "
        f"(p99 {summary['open']['latency_p99_ms']} ms), auth {summary['auth']['events_per_s']:,} events/s "
        f"(p99 {summary['auth']['latency_p99_ms']} ms): auth/open {ratio:.3f}, "
        f"overhead {summary['overhead_pct']}% ({'met' if summary['target_overhead_under_10pct'] else 'MISSED'}"
        " target < 10%)"
    )
    summary["http_rows"] = args.http_rows
    summary["repeat"] = args.repeat
    summary["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_at_start": load}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
