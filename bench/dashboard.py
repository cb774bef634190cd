"""Dashboard server time per page on a large synthetic history (default 100k customers, 10M signals).

Builds the history with bulk inserts (``forewarn.sim.synthetic``), serves it with a real uvicorn on a free
loopback port and requests every page many times. Server time is measured inside the app (a middleware around
the handler, reported in a ``Server-Timing`` header); ``/healthz`` in the same run is the reference. Customer
pages are requested for a different random customer each time, so no page is served from a warm row.

    python bench/dashboard.py                       # 100k customers, 10M signals (several minutes to build)
    python bench/dashboard.py --customers 10000 --signals 1000000 --requests 20

Targets: every page's server-time p50 < 300 ms and p95 < 1 s. The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from forewarn.config import Settings
from forewarn.context import Context
from forewarn.sim import synthetic
from forewarn.state.db import upgrade


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(-(-p * len(s) // 1)) - 1))]


def serve(ctx: Context) -> tuple[str, Any, threading.Thread]:
    import uvicorn
    from starlette.middleware.base import BaseHTTPMiddleware

    from forewarn.api.app import create_app

    app = create_app(ctx)

    async def timing(request: Any, call_next: Any) -> Any:
        t0 = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.3f}"
        return response

    app.add_middleware(BaseHTTPMiddleware, dispatch=timing)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return base, server, thread
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("uvicorn did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--signals", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=100, help="days of history")
    ap.add_argument("--requests", type=int, default=30, help="requests per page")
    ap.add_argument("--home", type=Path, help="reuse (or keep) the store in this folder")
    args = ap.parse_args()

    tmp = None
    home = args.home
    if home is None:
        tmp = tempfile.mkdtemp(prefix="fw-bench-dashboard-")
        home = Path(tmp)
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home)
    fresh = not (home / "state.db").exists()
    upgrade(settings.database_url)
    ctx = Context(settings)
    build_s = None
    if fresh:
        t0 = time.perf_counter()
        summary = synthetic.build(
            ctx.engine, ctx.signals, customers=args.customers, n_signals=args.signals, days=args.days
        )
        build_s = time.perf_counter() - t0
        print(f"built {summary} in {build_s:.1f} s")
    counts = ctx.signals.counts()
    print(
        f"signals stored: {sum(counts.values()):,} "
        f"({', '.join(f'{k} {v:,}' for k, v in counts.items() if v)})"
    )

    # the overview's metrics computed from scratch (what one cache refresh costs), same process
    from forewarn.measure.metrics import outcome_metrics
    from forewarn.web.routes import default_period, signal_reader

    period = default_period(ctx)
    cold = []
    for _ in range(max(3, args.requests // 5)):
        t0 = time.perf_counter()
        outcome_metrics(ctx.engine, period, signals=signal_reader(ctx))
        cold.append((time.perf_counter() - t0) * 1000)
    uncached = {"p50_ms": round(statistics.median(cold), 2), "p95_ms": round(pct(cold, 0.95), 2)}

    base, server, thread = serve(ctx)
    rng = random.Random(1)
    from forewarn.state import tokens, users
    from forewarn.state.db import transaction

    with transaction(ctx.engine) as s:  # the JSON API needs a token, the pages a signed-in user
        _, token = tokens.create(s, "bench", ["metrics:read"], actor="cli:bench", rate_limit=0)
    auth = {"Authorization": f"Bearer {token}"}
    viewer = users.get_user(ctx.engine, "bench") or users.create_user(
        ctx.engine, "bench", "viewer", password=users.generate_password()
    )
    session = users.start_session(ctx.engine, viewer, timedelta(hours=2))
    with httpx.Client(
        base_url=base, timeout=60, headers=auth, cookies={"forewarn_session": session}
    ) as client:
        incidents = client.get("/v1/metrics/incidents").json()["incidents"]
        open_id = incidents[0]["id"]
        big = max(incidents, key=lambda i: i["progress"]["affected"])["id"]
        with ctx.engine.connect() as conn:
            import sqlalchemy as sa

            n_customers = conn.execute(sa.text("SELECT count(*) FROM customers")).scalar_one()
        pages: dict[str, Any] = {
            "/healthz (reference)": "/healthz",
            "/ (overview, 30 days)": "/",
            "/?segment=smb&bucket=week": "/?segment=smb&bucket=week",
            "/incidents": "/incidents",
            "/incidents/{open}": f"/incidents/{open_id}",
            "/incidents/{largest}": f"/incidents/{big}",
            "/incidents/{id}/progress": f"/incidents/{open_id}/progress",
            "/findings": "/findings",
            "/customers/{random}": lambda: f"/customers/C{rng.randrange(n_customers):07d}",
            "/customers/{random}/story": lambda: f"/customers/C{rng.randrange(n_customers):07d}/story",
            "/outbox": "/outbox",
            "/outbox?status=dead": "/outbox?status=dead",
            "/playbooks": "/playbooks",
            "/metrics": "/metrics",
            "/v1/metrics/overview": "/v1/metrics/overview",
        }
        results: dict[str, dict[str, float]] = {}
        for name, path in pages.items():
            server_ms, wall_ms = [], []
            for i in range(args.requests + 1):
                url = path() if callable(path) else path
                t0 = time.perf_counter()
                r = client.get(url)
                wall = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise SystemExit(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
                if i == 0:
                    continue  # the first request warms templates and caches; report steady state
                server_ms.append(float(r.headers["server-timing"].split("dur=")[1]))
                wall_ms.append(wall)
            results[name] = {
                "p50_ms": round(statistics.median(server_ms), 2),
                "p95_ms": round(pct(server_ms, 0.95), 2),
                "wall_p50_ms": round(statistics.median(wall_ms), 2),
            }
    server.should_exit = True
    thread.join(timeout=10)
    ctx.close()

    ref = results["/healthz (reference)"]["p50_ms"]
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"store: {args.customers:,} customers, {sum(counts.values()):,} signals, SQLite state store")
    print(f"{args.requests} requests per page; server time measured inside the app\n")
    print(f"{'page':32} {'p50 ms':>9} {'p95 ms':>9} {'x healthz':>10} {'wall p50':>9}  target")
    ok = True
    for name, r in results.items():
        meets = name.startswith("/healthz") or (r["p50_ms"] < 300 and r["p95_ms"] < 1000)
        ok &= meets
        print(
            f"{name:32} {r['p50_ms']:9.1f} {r['p95_ms']:9.1f} {r['p50_ms'] / ref:10.1f} "
            f"{r['wall_p50_ms']:9.1f}  {'ok' if meets else 'MISSED'}"
        )
    print(
        f"\noverview metrics computed from scratch (one cache refresh, at most every 30 s): "
        f"p50 {uncached['p50_ms']:.1f} ms, p95 {uncached['p95_ms']:.1f} ms over {len(cold)} runs"
    )
    print(f"all pages within p50 < 300 ms and p95 < 1 s: {'yes' if ok else 'NO'}")
    if tmp and not args.home:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "customers": args.customers,
                "signals": sum(counts.values()),
                "build_s": None if build_s is None else round(build_s, 1),
                "requests_per_page": args.requests,
                "pages": results,
                "overview_uncached": uncached,
                "all_within_target": ok,
            }
        )
    )


if __name__ == "__main__":
    main()
