"""The README's "Using it with your own data" runs as written: its file names, its commands, in a fresh folder.

The commands are read out of README.md itself, so the docs and the CLI cannot drift apart: each line is run with
the installed ``forewarn`` in an empty temporary folder holding the files the README names (made from a small
simulated company whose history ends today, so the live pass is not behind), and its exit code and output are
checked. ``forewarn serve`` runs forever: its options are checked against its ``--help`` instead.

A second test runs every command a new user would try in an empty folder: one line naming the problem and the
fix, exit code 1 or 2, never a traceback.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from forewarn.demo import examples_dir
from forewarn.sim.world import SimConfig, simulate

README = Path(__file__).resolve().parents[1] / "README.md"
FOREWARN = str(Path(sys.executable).parent / "forewarn")


def readme_commands() -> list[list[str]]:
    """The ``forewarn ...`` lines of the README's own-data section, comments stripped, split like a shell."""
    text = README.read_text()
    section = text.split("## Using it with your own data", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        if not line.startswith("    forewarn "):
            continue
        commands.append(shlex.split(line, comments=True))
    return commands


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a new user: no FOREWARN_* settings, the folder as the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOREWARN_")}
    env["COLUMNS"] = "200"
    return env


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FOREWARN, *args[1:]], cwd=cwd, env=clean_env(cwd), capture_output=True, text=True, timeout=600
    )


def own_data_folder(folder: Path) -> None:
    """The files the README names, from a simulated company whose history runs from 2026-01-01 to today."""
    today = datetime.now(UTC).date()
    start = date(2026, 1, 1)
    days = (today - start).days + 1
    sim = folder / "sim"
    simulate(SimConfig(customers=150, days=days, seed=4, start=start), sim)
    for name in ("customers.jsonl", "services.csv", "dependencies.csv", "usage.parquet"):
        shutil.copy(sim / name, folder / name)
    shutil.copy(sim / "invoice.jsonl", folder / "invoices.jsonl")  # plural, as in the README
    pl.read_ndjson(sim / "contact.jsonl").write_csv(folder / "contacts.csv")
    shutil.copytree(examples_dir(), folder / "playbooks")
    shutil.rmtree(sim)


# what each step must print besides exiting 0 (the first words of the command pick the check)
EXPECT = {
    ("db", "upgrade"): ["state store migrated"],
    ("ingest", "customers.jsonl"): ["customers", "services", "dependencies"],
    ("ingest", "usage.parquet"): ["usage", "invoice", "contact"],
    ("detect",): ["usage", "billing"],
    ("playbooks", "check"): ["ok"],
    ("backtest",): [],
    ("playbooks", "run"): ["queued"],
    ("run",): ["decide"],
}


@pytest.mark.timeout(1200)
def test_readme_own_data_section_runs_as_written(tmp_path: Path) -> None:
    commands = readme_commands()
    assert [c[1] for c in commands] == [
        "db",
        "ingest",
        "ingest",
        "detect",
        "playbooks",
        "backtest",
        "playbooks",
        "run",
        "serve",
    ], "the README's own-data commands changed: update EXPECT here"
    own_data_folder(tmp_path)
    for args in commands:
        if args[1] == "serve":
            help_text = run([*args[:2], "--help"], tmp_path).stdout
            for option in (a for a in args[2:] if a.startswith("--")):
                assert option in help_text, f"`forewarn serve` has no {option} option"
            continue
        result = run(args, tmp_path)
        shown = " ".join(args)
        assert result.returncode == 0, (
            f"`{shown}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
        assert "Traceback" not in result.stderr, f"`{shown}`:\n{result.stderr}"
        key = next(k for k in EXPECT if tuple(args[1 : 1 + len(k)]) == k)
        for word in EXPECT[key]:
            assert word in result.stdout, f"`{shown}` did not print {word!r}:\n{result.stdout}"
        if args[1] == "ingest":
            assert "skipped" not in result.stdout and "rejected" in result.stdout, result.stdout
            assert re.search(r"total\s.*\s0\s*│?\s*$", result.stdout, re.M), (
                f"rows rejected:\n{result.stdout}"
            )
        if args[1] == "backtest":
            assert (tmp_path / "report.html").stat().st_size > 1000
            assert "no data" not in result.stdout.lower()
        if args[1] == "run":
            decide = next(line for line in result.stdout.splitlines() if "decide" in line)
            assert "skipped" not in decide and "ok" in decide, result.stdout


EMPTY_FOLDER = [
    "forewarn detect",
    "forewarn playbooks check playbooks/",
    "forewarn playbooks run playbooks/",
    "forewarn backtest playbooks/ --from 2026-01-01 --to 2026-03-31",
    "forewarn run",
    "forewarn run playbooks/",
    "forewarn ingest customers.jsonl",
    "forewarn metrics",
    "forewarn serve --monitors monitors.yaml",
    "forewarn detect --as-of yesterday",
    "forewarn nonsense",
]


@pytest.mark.parametrize("command", EMPTY_FOLDER)
def test_a_command_in_an_empty_folder_says_what_to_do_in_one_line(tmp_path: Path, command: str) -> None:
    result = run(shlex.split(command), tmp_path)
    assert result.returncode in (1, 2), f"`{command}` exited {result.returncode}:\n{result.stdout}"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    # (a usage error's box: its border lines are drawing, its one line inside is the message)
    lines = [line for line in result.stderr.splitlines() if line.strip() and line.lstrip()[0] not in "╭╰"]
    problem = [line for line in lines if not line.lstrip("│ ").startswith(("Usage:", "Try "))]
    assert len(problem) == 1, f"`{command}` printed {len(problem)} lines of error:\n{result.stderr}"
    fix = " ".join(lines).lower()
    assert any(
        w in fix for w in ("forewarn ingest", "copy", "--help", "expected", "create", "set ", "check the")
    ), f"`{command}` does not say how to fix it:\n{result.stderr}"
