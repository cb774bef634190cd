"""`forewarn simulate`: write a simulated ISP / telco world (signals, customers, ground truth) to DIR."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def simulate_cmd(
    customers: int = typer.Option(10_000, "--customers", "-n", min=1, help="how many customers"),
    days: int = typer.Option(180, "--days", "-d", min=14, help="how many days of history"),
    seed: int = typer.Option(0, "--seed", "-s", help="random seed: same seed, same files"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write (created if missing)"),
    start: datetime = typer.Option(
        "2026-01-01", "--start", formats=["%Y-%m-%d"], help="first simulated day (UTC)"
    ),
) -> None:
    """Simulate customers, services, signals and every injected problem, for `forewarn ingest DIR`.

    Writes the signal files (usage, purchase, invoice, telemetry, contact, feedback, subscription, shipment,
    service_metric), customers.jsonl, services.csv, dependencies.csv, ground_truth.jsonl and world.json.
    """
    from forewarn.sim.world import SimConfig, simulate

    config = SimConfig(
        customers=customers, days=days, seed=seed, start=date(start.year, start.month, start.day)
    )
    t0 = time.perf_counter()
    with console.status(f"simulating {customers:,} customers x {days} days (seed {seed})..."):
        world = simulate(config, out)
    elapsed = time.perf_counter() - t0
    counts = world.counts()
    table = Table(title=f"forewarn simulate -> {out}", show_header=True)
    table.add_column("file")
    table.add_column("rows", justify="right")
    table.add_column("size", justify="right")
    sizes = {p.name: p.stat().st_size for p in Path(out).iterdir() if p.is_file()}
    rows = {f"{k}": v for k, v in counts["rows"].items()}
    for name in sorted(sizes):
        stem = name.split(".")[0]
        n = rows.get(stem)
        if stem == "customers":
            n = counts["customers"]
        elif stem == "dependencies":
            n = counts["dependencies"]
        elif stem == "ground_truth":
            n = sum(counts["truth"].values())
        table.add_row(name, "" if n is None else f"{n:,}", f"{sizes[name] / 1e6:.1f} MB")
    console.print(table)
    truth = ", ".join(f"{k} {v:,}" for k, v in counts["truth"].items())
    console.print(f"ground truth: {truth}")
    console.print(f"caused contacts: {counts['caused_contacts']:,}; done in {elapsed:.1f} s")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("simulate")(simulate_cmd)
