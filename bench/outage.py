"""Outage fan-out benchmark: time from incident open to every notice in the outbox.

Seeds N customers (M of them depending on the broken service in the broken region), opens one incident through
``forewarn.incidents.service.open_incident`` (impact as INSERT..SELECT, notices as INSERT..SELECT, one
transaction) and times it to commit. The reference, measured in the same run, bulk-inserts the very same rows
(affected customers and outbox rows) plainly: executemany on SQLite, COPY on PostgreSQL. Then it times one
public update of the incident (a second notice to every affected customer; not part of the target). The seeded
store is brought to rest first (analysed, vacuumed and checkpointed, synced to disk: see ``settle``).

    python bench/outage.py --customers 200000 --affected 100000
    python bench/outage.py --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Targets (issue 3): < 10 s on SQLite, < 15 s on PostgreSQL for 2M customers / 1M affected, peak memory < 2 GB.
Besides wall time it prints the CPU time of the work: this process's (all of it on SQLite) and, when the
PostgreSQL server runs on this machine, the server process's; on a shared machine those are the stable figures.
The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from forewarn.incidents.service import open_incident, post_update
from forewarn.state.db import open_store, transaction, upgrade

REGIONS_OTHER = ("south", "east", "west")
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CHUNK = 100_000


def customers_rows(n: int, m: int) -> Iterator[tuple]:
    for i in range(n):
        cid = f"C{i:08d}"
        channels = '["sms", "email"]' if i % 3 else '["email"]'
        region = "north" if i < m else REGIONS_OTHER[i % 3]
        yield (
            cid,
            f"Customer {i}",
            f"c{i}@example.test",
            f"+3161{i:07d}",
            "Europe/Amsterdam",
            "en",
            region,
            channels,
        )


def dependency_rows(n: int, m: int) -> Iterator[tuple]:
    for i in range(n):
        region = "north" if i < m else REGIONS_OTHER[i % 3]
        yield (f"C{i:08d}", "internet", region)
        if i % 4 == 0:
            yield (f"C{i:08d}", "tv", region)


def consent_rows(n: int) -> Iterator[tuple]:
    # 1 in 20 customers withheld consent for outage texts (sms), a few for everything
    now = T0.replace(tzinfo=None).isoformat(sep=" ")
    for i in range(1, n, 20):
        yield (f"C{i:08d}", "sms", "outage", False, "import", now)
    for i in range(7, n, 1000):
        yield (f"C{i:08d}", "email", "*", False, "import", now)


def chunks(rows: Iterator[tuple], size: int = CHUNK) -> Iterator[list[tuple]]:
    batch: list[tuple] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


CUSTOMER_COLS = "id, name, email, phone, timezone, locale, region, channels"


def seed(engine: sa.Engine, n: int, m: int) -> None:
    now = T0.replace(tzinfo=None)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cur.copy("COPY services (id, name, public) FROM STDIN") as cp:
                cp.write_row(("internet", "Internet", True))
                cp.write_row(("tv", "TV", True))
            with cur.copy(
                f"COPY customers ({CUSTOMER_COLS}, attributes, created_at, updated_at) FROM STDIN"
            ) as cp:
                for row in customers_rows(n, m):
                    cp.write_row((*row, "{}", now, now))
            with cur.copy("COPY dependencies (customer_id, service_id, region) FROM STDIN") as cp:
                for row in dependency_rows(n, m):
                    cp.write_row(row)
            with cur.copy(
                "COPY consents (customer_id, channel, topic, granted, source, updated_at) FROM STDIN"
            ) as cp:
                for row in consent_rows(n):
                    cp.write_row(row)
            raw.commit()
        else:
            cur.execute(
                "INSERT INTO services (id, name, public) VALUES ('internet','Internet',1),('tv','TV',1)"
            )
            ts = now.isoformat(sep=" ")
            for batch in chunks(customers_rows(n, m)):
                cur.executemany(
                    f"INSERT INTO customers ({CUSTOMER_COLS}, attributes, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?,?,'{}',?,?)",
                    [(*r, ts, ts) for r in batch],
                )
            for batch in chunks(dependency_rows(n, m)):
                cur.executemany(
                    "INSERT INTO dependencies (customer_id, service_id, region) VALUES (?,?,?)", batch
                )
            cur.executemany(
                "INSERT INTO consents (customer_id, channel, topic, granted, source, updated_at) "
                "VALUES (?,?,?,?,?,?)",
                list(consent_rows(n)),
            )
            raw.commit()
    finally:
        raw.close()


def settle(engine: sa.Engine) -> None:
    """Bring the freshly seeded store to rest, as a store is when an outage finds it: on PostgreSQL vacuumed
    and analysed (what autovacuum does within minutes of a load; a just-COPYed table still has every row's
    visibility to settle, which the first reader pays for) and checkpointed, so that neither the fan-out nor
    the reference runs while the seed's WAL is being written out. On SQLite: analysed. On both, the seed's
    files are synced to disk first."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM (ANALYZE)" if engine.dialect.name == "postgresql" else "ANALYZE")
    checkpoint(engine)
    os.sync()  # nothing of the seed is still being written to disk when the clock starts


def checkpoint(engine: sa.Engine) -> None:
    """Write out pending WAL before a timed part (PostgreSQL), so that it does not pay for the previous one's."""
    if engine.dialect.name != "postgresql":
        return
    # needs superuser or pg_checkpoint; without it the run is still valid, only noisier
    with (
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        contextlib.suppress(sa.exc.DBAPIError),
    ):
        conn.exec_driver_sql("CHECKPOINT")


def backend_cpu(pid: int | None) -> float | None:
    """CPU seconds used so far by a PostgreSQL server process, when the server runs on this machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(engine: sa.Engine, step: Callable[[Session], int]) -> tuple[float, int, float, float | None]:
    """Run ``step`` in one transaction, to commit: wall time, its result, this process's CPU time (on SQLite
    all of the database work) and, for a local PostgreSQL, the server process's CPU time (on a shared
    machine the CPU figures are the stable ones)."""
    pid = before = None
    start, cpu = time.perf_counter(), time.process_time()
    with transaction(engine) as s:
        if engine.dialect.name == "postgresql":
            pid = s.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            before = backend_cpu(pid)
        result = step(s)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = backend_cpu(pid)
    server = after - before if after is not None and before is not None else None
    return elapsed, result, cpu, server


def open_outage(session: Session) -> int:
    """The incident under test: every customer of the broken service in the broken region is affected."""
    return open_incident(
        session,
        title="Internet outage in north",
        services=["internet"],
        regions=["north"],
        now=T0,
        severity="major",
    ).id


def update_outage(incident_id: int) -> Callable[[Session], int]:
    """A public update of that incident: one more notice to every affected customer."""

    def step(session: Session) -> int:
        update = post_update(
            session, incident_id, status="identified", message="A cut fibre.", now=T0 + timedelta(minutes=20)
        )
        return update.queued

    return step


OUTBOX_COLS = (
    "idempotency_key, customer_id, channel, address, topic, thread_key, priority, subject, body, payload, "
    "status, reason, attempts, next_attempt_at, incident_id, created_at"
)


def reference(engine: sa.Engine, incident_id: int) -> float:
    """Time inserting the very rows the fan-out wrote, plainly (executemany / COPY), into the same tables.

    The rows are first set aside in holding tables (not timed) and removed; the timed part streams them back
    in chunks from the holding tables, so memory stays flat.
    """
    pg = engine.dialect.name == "postgresql"
    payload = "payload::text" if pg else "payload"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE ref_affected AS SELECT incident_id, customer_id, service_id, region, added_at "
            f"FROM affected_customers WHERE incident_id = {incident_id}"
        )
        cols = OUTBOX_COLS.replace("payload", f"{payload} AS payload")
        conn.exec_driver_sql(
            f"CREATE TABLE ref_outbox AS SELECT {cols} FROM outbox WHERE incident_id = {incident_id}"
        )
        conn.exec_driver_sql(f"DELETE FROM outbox WHERE incident_id = {incident_id}")
        conn.exec_driver_sql(f"DELETE FROM affected_customers WHERE incident_id = {incident_id}")
    checkpoint(engine)
    targets = [
        ("ref_affected", "affected_customers", "incident_id, customer_id, service_id, region, added_at", 5),
        ("ref_outbox", "outbox", OUTBOX_COLS, 16),
    ]
    src, dst = engine.raw_connection(), engine.raw_connection()
    try:
        cur = dst.cursor()
        start = time.perf_counter()
        for holding, table, columns, n in targets:
            rc = src.cursor(name=f"read_{holding}") if pg else src.cursor()
            rc.execute(f"SELECT {columns} FROM {holding}")
            if pg:
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
                    while rows := rc.fetchmany(50_000):
                        for row in rows:
                            cp.write_row(row)
            else:
                while rows := rc.fetchmany(50_000):
                    cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({','.join('?' * n)})", rows)
            rc.close()
        dst.commit()
        elapsed = time.perf_counter() - start
        src.rollback()
    finally:
        src.close()
        dst.close()
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE ref_affected")
        conn.exec_driver_sql("DROP TABLE ref_outbox")
    return elapsed


def delivery_figures(args: argparse.Namespace) -> dict:
    """Delivery throughput to a local webhook and SMTP receiver, from ``bench/delivery.py`` (run as a child
    process on the same store kind; it measures its own raw-send reference in the same run)."""
    script = Path(__file__).parent / "delivery.py"
    if not script.exists():
        return {"delivery": "bench/delivery.py not present"}
    cmd = [
        sys.executable,
        str(script),
        "--messages",
        str(args.delivery_messages),
        "--smtp-messages",
        str(max(args.delivery_messages // 2, 1)),
        "--runs",
        "1",
    ]
    if args.db.startswith("postgresql"):
        cmd += ["--db", args.db]
    print("delivery: " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    for line in lines[:-1]:
        print(f"  {line}")
    try:
        return {"delivery": json.loads(lines[-1])}
    except (IndexError, json.JSONDecodeError):
        return {"delivery_error": (proc.stderr or proc.stdout)[-500:]}


def fresh_db(args: argparse.Namespace) -> tuple[str, callable]:
    if args.db.startswith("postgresql"):
        admin = sa.create_engine(args.db, isolation_level="AUTOCOMMIT")
        name = f"fw_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(args.db).set(database=name).render_as_string(hide_password=False)

        def drop() -> None:
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()

        return url, drop
    folder = tempfile.mkdtemp(prefix="fw-outage-")
    return f"sqlite:///{folder}/state.db", lambda: shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=2_000_000)
    p.add_argument("--affected", type=int, default=1_000_000)
    p.add_argument("--db", default="sqlite", help="'sqlite' (a temp file) or a postgresql:// URL (admin db)")
    p.add_argument(
        "--repeat", type=int, default=1, help="open this many incidents (fresh db each) for a median"
    )
    p.add_argument("--delivery-messages", type=int, default=20_000)
    p.add_argument("--no-delivery", action="store_true")
    args = p.parse_args()
    if args.db.startswith("postgresql://"):
        args.db = "postgresql+psycopg://" + args.db[len("postgresql://") :]
    assert args.affected <= args.customers, "--affected must be <= --customers"

    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    opens, refs, updates, seeds, peaks, cpus, server_cpus = [], [], [], [], [], [], []
    outbox_rows = 0
    for run in range(args.repeat):
        url, drop = fresh_db(args)
        try:
            upgrade(url)
            engine = open_store(url)
            t = time.perf_counter()
            seed(engine, args.customers, args.affected)
            seeds.append(time.perf_counter() - t)
            settle(engine)
            print(
                f"[run {run}] seeded {args.customers:,} customers in {seeds[-1]:.1f} s "
                f"({engine.dialect.name})"
            )
            elapsed, incident_id, cpu, server_cpu = timed(engine, open_outage)
            cpus.append(cpu)
            if server_cpu is not None:
                server_cpus.append(server_cpu)
            with engine.connect() as c:
                outbox_rows = c.exec_driver_sql("SELECT COUNT(*) FROM outbox").scalar_one()
                suppressed = c.exec_driver_sql(
                    "SELECT COUNT(*) FROM outbox WHERE status='suppressed'"
                ).scalar_one()
            assert outbox_rows == args.affected, (outbox_rows, args.affected)
            opens.append(elapsed)
            print(
                f"[run {run}] incident open -> {outbox_rows:,} notices in the outbox "
                f"({suppressed:,} suppressed): "
                f"{elapsed:.2f} s (process CPU {cpu:.2f} s"
                + (f", server process CPU {server_cpu:.2f} s" if server_cpu is not None else "")
                + f", load average {os.getloadavg()[0]:.1f})"
            )
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            ref = reference(engine, incident_id)
            refs.append(ref)
            print(f"[run {run}] reference: same rows bulk-inserted plainly: {ref:.2f} s")
            elapsed, queued, _, server_cpu = timed(engine, update_outage(incident_id))
            assert queued == args.affected, (queued, args.affected)
            updates.append(elapsed)
            print(
                f"[run {run}] public update -> {queued:,} more notices in the outbox: {elapsed:.2f} s"
                + (f" (server process CPU {server_cpu:.2f} s)" if server_cpu is not None else "")
            )
            engine.dispose()
        finally:
            drop()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    target = 15.0 if args.db.startswith("postgresql") else 10.0
    figures = {
        "bench": "outage",
        "db": "postgresql" if args.db.startswith("postgresql") else "sqlite",
        "customers": args.customers,
        "affected": args.affected,
        "notices": outbox_rows,
        "open_to_outbox_s_median": round(statistics.median(opens), 3),
        "reference_bulk_insert_s_median": round(statistics.median(refs), 3),
        "update_to_outbox_s_median": round(statistics.median(updates), 3),
        "open_cpu_s_median": round(statistics.median(cpus), 3),
        "open_server_cpu_s_median": round(statistics.median(server_cpus), 3) if server_cpus else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "ratio_vs_reference": round(statistics.median(opens) / statistics.median(refs), 3),
        "notices_per_s": round(outbox_rows / statistics.median(opens)),
        "target_s": target,
        "meets_target": statistics.median(opens) < target,
        "seed_s": round(statistics.median(seeds), 1),
        "peak_rss_mb_through_open": round(max(peaks)),
        "peak_rss_mb": round(peak_mb),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    if not args.no_delivery:
        figures.update(delivery_figures(args))
    print(
        f"open->outbox median {figures['open_to_outbox_s_median']} s, "
        f"reference {figures['reference_bulk_insert_s_median']} s, "
        f"ratio {figures['ratio_vs_reference']}, "
        f"peak RSS {figures['peak_rss_mb_through_open']} MB through the open, "
        f"{figures['peak_rss_mb']} MB in all"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
