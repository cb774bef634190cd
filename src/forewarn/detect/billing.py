"""The billing trip wire: bill shock against the customer's own bills, and errors caught on draft invoices.

An invoice may arrive several times (a draft, later the issued version, corrections); at ``as_of`` each
``invoice_id`` is in the state of its latest row with ``ts <= as_of``. Conditions:

- ``billing:shock:<invoice_id>``: the customer's newest invoice (draft or issued, last changed within
  ``recent_days``) is above their tolerance band: the median of their previous ``history`` issued invoices
  plus ``z_threshold`` robust spreads (1.4826 x MAD, floored at ``min_scale_rel`` of the median), and at least
  ``min_increase_abs`` more than the median, and (``new_jumps_only``) the previous bill was inside the band,
  so a new price level is told once, not every month until it is usual. The explanation names the line
  items that changed most against the customer's usual amount per line code ("Roaming charges of 61.20
  are new this month").
- on drafts (not yet issued, last changed within ``recent_days``), before they go out:
  ``billing:duplicate:<invoice_id>:<code>``: the same line (code, description, amount, quantity) twice;
  ``billing:unknown_service:<invoice_id>:<service_id>``: a line for a service the customer does not depend on.
  A line is a service charge when its code, after dropping a prefix in ``service_code_prefixes``
  (``addon_tv``) and anything after a ``:`` (``tv:premium``), is a known service id; known services are
  context ``services`` plus every service in ``dependencies``;
  ``billing:usage_mismatch:<invoice_id>``: an overage line (code in ``overage_codes``, or ``<code>:...``)
  charging more than the metered usage over the plan limit allows (e.g. overage while usage stayed under
  the limit). Usage is the sum of ``usage_metric`` over the invoice period; it is only judged when usage rows
  cover at least ``min_usage_coverage`` of the period's days (or a monthly row is present).

Context used: ``customers`` (``attributes.plan_limit_gb``, for the usage check), ``dependencies``
(customer_id, service_id, region; without it the service check is skipped) and optionally ``services`` (a
frame with ``id`` or ``service_id``, or a list of ids). All findings have topic ``billing``.

>>> from datetime import date, datetime, UTC
>>> def inv(i, total, lines, status="issued"):
...     return {"customer_id": "c1", "ts": datetime(2026, i + 1, 2, tzinfo=UTC), "invoice_id": f"I{i}",
...             "status": status, "period_start": date(2026, i, 1), "period_end": date(2026, i, 28),
...             "total": total, "currency": None, "lines": lines}
>>> base = {"code": "plan", "description": "Mobile plan", "amount": 40.0, "quantity": 1.0}
>>> roam = {"code": "roaming", "description": "Roaming charges", "amount": 61.2, "quantity": 1.0}
>>> rows = [inv(i, 40.0 + i % 2, [base]) for i in range(1, 6)] + [inv(6, 101.2, [base, roam])]
>>> out = BillingTripWire().detect({"invoice": pl.DataFrame(rows)}, datetime(2026, 7, 3, tzinfo=UTC))
>>> print(out["explanation"][0])
Your bill of 101.20 is 2.5x your usual 41.00; Roaming charges of 61.20 are new this month.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import polars as pl

from forewarn.detect.base import Params, as_findings, empty_findings, params_with, point_in_time
from forewarn.detect.history import carry_forward, change_runs, daily_runs, run_micros
from forewarn.detect.opportunity import plan_limits, usage_day
from forewarn.timeutil import utc

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution x this = sigma


@dataclass(frozen=True)
class BillingParams(Params):
    """Parameters of the billing trip wire; amounts are in the invoice's currency units."""

    history: int = 12  # previous issued invoices that define the customer's usual bill
    min_history: int = 2  # fewer than this: no bill-shock judgement yet (2 = from a new customer's 3rd bill)
    z_threshold: float = 3.5  # robust spreads above the usual bill
    min_scale_rel: float = 0.1  # the spread is at least this fraction of the usual bill (flat bills)
    min_increase_abs: float = 10.0  # and the bill is at least this much above the usual one
    new_jumps_only: bool = (
        True  # the previous bill was inside the band: a jump, not an already-known new level
    )
    recent_days: int = 45  # an invoice is news for this many days after its last change
    explain_share: float = 0.8  # name changed lines until they explain this share of the increase...
    explain_lines: int = 2  # ...or this many lines
    derived_codes: tuple[str, ...] = ("tax", "vat")  # lines computed from the others, never named as a cause
    service_code_prefixes: tuple[str, ...] = ("addon_",)  # line code = prefix + service id
    overage_codes: tuple[str, ...] = ("overage", "data_overage")
    usage_metric: str = "data_gb"
    limit_attribute: str = "plan_limit_gb"
    unit: str = "GB"
    overage_tolerance: float = 0.05  # overage quantity may exceed the metered excess by this fraction...
    overage_tolerance_abs: float = 0.5  # ...plus this many units (rounding in the billing system)
    usage_stamp: str = "end"  # usage ts marks the end of the measured period (see opportunity.usage_day)
    min_usage_coverage: float = 0.9  # share of the period's days with usage rows before usage is judged


def _money(v: float, currency: str | None) -> str:
    return f"{v:.2f}" + (f" {currency}" if currency else "")


def _are(description: str) -> str:
    return "are" if description.rstrip().lower().endswith("s") else "is"


def latest_state(invoices: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Each invoice as it stood at ``as_of``: its latest row with ``ts <= as_of`` (issued wins a tie)."""
    return (
        point_in_time(invoices, as_of)
        .sort("invoice_id", "ts", pl.col("status") == "issued")
        .unique("invoice_id", keep="last", maintain_order=True)
    )


def _lines_by_code(lines: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in lines or []:
        code = line.get("code") or line.get("description") or "?"
        entry = out.setdefault(
            code, {"description": line.get("description") or code, "amount": 0.0, "qty": 0.0}
        )
        entry["amount"] += line.get("amount") or 0.0
        entry["qty"] += line.get("quantity") or 0.0
    return out


def explain_change(
    current: list[dict[str, Any]] | None, previous: list[list[dict[str, Any]] | None]
) -> list[dict[str, Any]]:
    """Line codes ranked by how much more they charge now than usual (median over ``previous`` invoices).

    >>> old = [[{"code": "plan", "description": "Plan", "amount": 40.0, "quantity": 1.0}]] * 3
    >>> new = [{"code": "plan", "description": "Plan", "amount": 45.0, "quantity": 1.0},
    ...        {"code": "roam", "description": "Roaming", "amount": 20.0, "quantity": 1.0}]
    >>> [(c["code"], c["change"], c["new"]) for c in explain_change(new, old)]
    [('roam', 20.0, True), ('plan', 5.0, False)]
    """
    now = _lines_by_code(current)
    before = [_lines_by_code(p) for p in previous]
    codes = set(now) | {c for b in before for c in b}
    out = []
    for code in codes:
        amounts = sorted(b[code]["amount"] if code in b else 0.0 for b in before)
        n = len(amounts)
        usual = 0.0 if n == 0 else (amounts[n // 2] if n % 2 else (amounts[n // 2 - 1] + amounts[n // 2]) / 2)
        seen = sum(code in b for b in before)
        cur = now.get(code, {"amount": 0.0, "qty": 0.0, "description": None})
        description = cur["description"] or next(b[code]["description"] for b in before if code in b)
        qtys = sorted(b[code]["qty"] for b in before if code in b)
        usual_qty = qtys[len(qtys) // 2] if qtys else 0.0
        price_change = (
            seen > 0
            and code in now
            and usual_qty > 0
            and abs(cur["qty"] - usual_qty) <= 1e-9
            and abs(cur["amount"] - usual) > 0.005
        )
        out.append(
            {
                "code": code,
                "description": description,
                "amount": round(cur["amount"], 2),
                "usual": round(usual, 2),
                "change": round(cur["amount"] - usual, 2),
                "new": seen == 0 and code in now,
                "price_change": price_change,
            }
        )
    return sorted(out, key=lambda c: (-c["change"], c["code"]))


def _phrase(c: dict[str, Any], currency: str | None) -> str:
    desc, amount = c["description"], _money(c["amount"], currency)
    if c["new"]:
        return f"{desc} of {amount} {_are(desc)} new this month"
    went = f"{desc} went from {_money(c['usual'], currency)} to {amount}"
    return went + (" (a price change)" if c["price_change"] else "")


class BillingTripWire:
    """Bill shock on the newest invoice; duplicate, unknown-service and usage-mismatch errors on drafts."""

    name: ClassVar[str] = "billing"
    kinds: ClassVar[tuple[str, ...]] = ("invoice", "usage")

    def __init__(self, **overrides: Any) -> None:
        self.params = params_with(BillingParams, "billing", overrides)

    def history(self) -> dict[str, timedelta | None]:
        """All invoices: the usual bill is the median of the previous ``history`` issued invoices, however
        long ago they were (a count, not a time span), and an invoice's state is its latest row, however old.
        Usage from ``recent_days`` + 31 days before ``as_of``: the usage check sums usage over the period of
        a draft changed within ``recent_days``, which for a monthly invoice starts at most about a month
        before that; a draft whose period starts before the read is :meth:`backfill`'s business.

        >>> h = BillingTripWire().history()
        >>> h["invoice"], h["usage"].days
        (None, 76)
        """
        return {"invoice": None, "usage": timedelta(days=self.params.recent_days + 31)}

    def backfill(
        self,
        frames: Mapping[str, pl.DataFrame],
        as_of: datetime,
        since: Mapping[str, datetime | None],
        **context: Any,
    ) -> dict[str, list[str]]:
        """Customers with a draft (changed within ``recent_days``) whose period starts before the usage read
        (with a day to spare for end-stamped readings): the usage check needs their usage since that start."""
        start, invoices = since.get("usage"), frames.get("invoice")
        if start is None or invoices is None or invoices.height == 0:
            return {}
        as_of = utc(as_of)
        drafts = latest_state(invoices, as_of).filter(
            (pl.col("ts") >= as_of - timedelta(days=self.params.recent_days)) & (pl.col("status") == "draft")
        )
        early = drafts.filter(
            pl.col("period_start").is_null() | (pl.col("period_start") <= (start + timedelta(days=1)).date())
        )
        return {"usage": early["customer_id"].unique().sort().to_list()}

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame:
        as_of = utc(as_of)
        invoices = frames.get("invoice")
        if invoices is None or invoices.height == 0:
            return empty_findings()
        state = latest_state(invoices, as_of)
        if "currency" not in state.columns:
            state = state.with_columns(pl.lit(None, dtype=pl.String()).alias("currency"))
        recent = state.filter(pl.col("ts") >= as_of - timedelta(days=self.params.recent_days))
        drafts = recent.filter(pl.col("status") == "draft")
        rows = self._shock(state, recent, as_of)
        rows += self._duplicates(drafts, as_of)
        rows += self._unknown_services(drafts, as_of, context.get("dependencies"), context.get("services"))
        rows += self._usage_mismatch(drafts, as_of, frames.get("usage"), context.get("customers"))
        if not rows:
            return empty_findings()
        return as_findings(pl.DataFrame(rows)).sort("customer_id", "condition")

    def score_history(
        self,
        frames: Mapping[str, pl.DataFrame],
        *,
        runs: Sequence[datetime] | None = None,
        **context: Any,
    ) -> pl.DataFrame:
        """``detect`` at every run (default: daily at 09:00 UTC over the invoices' span), concatenated.

        A customer's billing findings change only when one of their invoice rows arrives or leaves the
        ``recent_days`` window, or (for the usage check) a usage row arrives for a customer with an overage
        line on a draft; so ``detect`` runs at those runs for those customers only and its findings are
        carried to the runs in between (:func:`forewarn.detect.history.carry_forward`).
        """
        invoices = frames.get("invoice")
        if invoices is None or invoices.height == 0:
            return empty_findings()
        runs = sorted(utc(r) for r in runs) if runs is not None else daily_runs(frames, ["invoice"])
        if not runs:
            return empty_findings()
        run_us = run_micros(runs)
        recent = timedelta(days=self.params.recent_days)
        changes = [
            change_runs(invoices["customer_id"], invoices["ts"], run_us),
            change_runs(invoices["customer_id"], invoices["ts"], run_us, after=recent),
        ]
        usage = frames.get("usage")
        if usage is not None and usage.height:
            usage = usage.filter(
                pl.col("metric") == self.params.usage_metric,
                pl.col("customer_id").is_in(self._overage_customers(invoices).implode()),
            )
            changes.append(change_runs(usage["customer_id"], usage["ts"], run_us))

        # The context cut to each call's customers, with what is global worked out once: plan limits parsed
        # from the customers' attributes, and the known services (every service in the dependencies).
        limits = plan_limits(context.get("customers"), self.params.limit_attribute).rename(
            {"plan_limit": self.params.limit_attribute}
        )
        dependencies = context.get("dependencies")
        rest = {k: v for k, v in context.items() if k not in ("customers", "dependencies", "services")}
        if dependencies is not None:
            rest["services"] = sorted(self._known_services(dependencies, context.get("services")))

        def detect_at(customers: pl.Series, as_of: datetime) -> pl.DataFrame:
            mine = pl.col("customer_id").is_in(customers.implode())
            subset = {"invoice": invoices.filter(mine & (pl.col("ts") <= as_of))}
            if usage is not None:
                subset["usage"] = usage.filter(mine & (pl.col("ts") <= as_of))
            cut = dict(rest, customers=limits.filter(mine))
            if dependencies is not None:
                cut["dependencies"] = dependencies.filter(mine)
            return self.detect(subset, as_of, **cut)

        return carry_forward(pl.concat(changes), runs, detect_at)

    def _overage_customers(self, invoices: pl.DataFrame) -> pl.Series:
        """Customers with an overage line on any draft: the only ones the usage check can speak about."""
        codes = pl.Series(list(self.params.overage_codes)).implode()
        lines = (
            invoices.filter(pl.col("status") == "draft")
            .select("customer_id", "lines")
            .explode("lines")
            .drop_nulls("lines")
            .unnest("lines")
        )
        if lines.height == 0:
            return pl.Series("customer_id", [], dtype=pl.String)
        hit = lines.filter(pl.col("code").str.split(":").list.first().is_in(codes) & (pl.col("amount") > 0))
        return hit["customer_id"].unique()

    def _finding(self, customer_id: str, condition: str, as_of: datetime, **values: Any) -> dict[str, Any]:
        values["evidence"] = json.dumps(values["evidence"], sort_keys=True, default=str)
        return {"customer_id": customer_id, "kind": self.name, "condition": condition, "ts": as_of,
                "topic": "billing", **values}  # fmt: skip

    # -- bill shock ----------------------------------------------------------------------------------------

    def _shock(self, state: pl.DataFrame, recent: pl.DataFrame, as_of: datetime) -> list[dict[str, Any]]:
        p = self.params
        current = (
            recent.sort("customer_id", "period_end", "ts")
            .unique("customer_id", keep="last", maintain_order=True)
            .select(
                "customer_id",
                pl.col("invoice_id").alias("cur_id"),
                pl.col("period_start").alias("cur_start"),
                pl.col("total").alias("cur_total"),
            )
        )
        history = (
            state.filter(pl.col("status") == "issued")
            .join(current, on="customer_id")
            .filter(pl.col("period_end") < pl.col("cur_start"), pl.col("invoice_id") != pl.col("cur_id"))
            .sort("customer_id", "period_end")
            .group_by("customer_id", maintain_order=True)
            .tail(p.history)
        )
        band = (
            history.with_columns(pl.col("total").median().over("customer_id").alias("usual"))
            .group_by("customer_id")
            .agg(
                pl.len().alias("n_history"),
                pl.col("usual").first(),
                (pl.col("total") - pl.col("usual")).abs().median().alias("mad"),
                pl.col("total").last().alias("previous"),
            )
            .filter(pl.col("n_history") >= p.min_history)
            .join(current, on="customer_id")
            .with_columns(
                pl.max_horizontal(
                    MAD_TO_SIGMA * pl.col("mad"), p.min_scale_rel * pl.col("usual").abs(), pl.lit(0.01)
                ).alias("scale")
            )
            .with_columns(((pl.col("cur_total") - pl.col("usual")) / pl.col("scale")).alias("z"))
        )
        upper = pl.col("usual") + p.z_threshold * pl.col("scale")
        fired = band.filter(
            pl.col("z") >= p.z_threshold,
            pl.col("cur_total") - pl.col("usual") >= p.min_increase_abs,
            (pl.col("previous") < upper) | (not p.new_jumps_only),
        ).sort("customer_id")
        if fired.height == 0:
            return []
        invoices = state.filter(pl.col("customer_id").is_in(fired["customer_id"].implode()))
        by_id = {r["invoice_id"]: r for r in invoices.iter_rows(named=True)}
        past = history.filter(pl.col("customer_id").is_in(fired["customer_id"].implode()))
        past_ids = past.group_by("customer_id").agg(pl.col("invoice_id"))
        past_of = dict(zip(past_ids["customer_id"], past_ids["invoice_id"], strict=True))
        rows = []
        for f in fired.iter_rows(named=True):
            inv = by_id[f["cur_id"]]
            changes = explain_change(inv["lines"], [by_id[i]["lines"] for i in past_of[f["customer_id"]]])
            increase = f["cur_total"] - f["usual"]
            named, covered = [], 0.0
            for c in changes:
                if c["change"] <= 0 or len(named) >= p.explain_lines or covered >= p.explain_share * increase:
                    break
                if c["code"] in p.derived_codes:  # tax follows the other lines; it is not a cause
                    c["price_change"] = False
                    continue
                named.append(c)
                covered += c["change"]
            currency = inv["currency"]
            ratio = f["cur_total"] / f["usual"] if f["usual"] > 0 else float("inf")
            which = "upcoming bill" if inv["status"] == "draft" else "bill"
            text = f"Your {which} of {_money(f['cur_total'], currency)} is "
            text += (
                f"{ratio:.1f}x your usual {_money(f['usual'], currency)}"
                if f["usual"] > 0
                else "higher than usual"
            )
            if named:
                text += "; " + " and ".join(_phrase(c, currency) for c in named)
            evidence = {
                "invoice_id": f["cur_id"],
                "status": inv["status"],
                "period": [inv["period_start"].isoformat(), inv["period_end"].isoformat()],
                "total": f["cur_total"],
                "usual": f["usual"],
                "mad": f["mad"],
                "previous_total": f["previous"],
                "scale": f["scale"],
                "z": round(f["z"], 3),
                "ratio": round(ratio, 3),
                "history_invoices": f["n_history"],
                "changed_lines": [c for c in changes if c["change"] != 0][:10],
            }
            rows.append(
                self._finding(
                    f["customer_id"],
                    f"billing:shock:{f['cur_id']}",
                    as_of,
                    score=float(f["z"]),
                    confidence=f["n_history"] / (f["n_history"] + 2.0),
                    severity="warning",
                    explanation=text + ".",
                    evidence=evidence,
                )
            )
        return rows

    # -- errors on drafts -----------------------------------------------------------------------------------

    @staticmethod
    def _draft_lines(drafts: pl.DataFrame) -> pl.DataFrame:
        return (
            drafts.select("customer_id", "invoice_id", "currency", "period_start", "period_end", "lines")
            .explode("lines")
            .drop_nulls("lines")
            .unnest("lines")
        )

    def _duplicates(self, drafts: pl.DataFrame, as_of: datetime) -> list[dict[str, Any]]:
        if drafts.height == 0:
            return []
        dupes = (
            self._draft_lines(drafts)
            .group_by("customer_id", "invoice_id", "currency", "code", "description", "amount", "quantity")
            .agg(pl.len().alias("times"))
            .filter(pl.col("times") > 1)
            .sort("customer_id", "invoice_id", "code")
        )
        rows = []
        for d in dupes.iter_rows(named=True):
            times = "twice" if d["times"] == 2 else f"{d['times']} times"
            amount = _money(d["amount"] or 0.0, d["currency"])
            text = (
                f"Your upcoming bill lists {d['description'] or d['code']} ({amount}) {times}; "
                "we are correcting it before the bill is issued."
            )
            rows.append(
                self._finding(
                    d["customer_id"],
                    f"billing:duplicate:{d['invoice_id']}:{d['code']}",
                    as_of,
                    score=float((d["amount"] or 0.0) * (d["times"] - 1)),
                    confidence=0.9,
                    severity="warning",
                    explanation=text,
                    evidence={
                        k: d[k] for k in ("invoice_id", "code", "description", "amount", "quantity", "times")
                    },
                )
            )
        return rows

    def _service_of(self, code: pl.Expr) -> pl.Expr:
        """The service id a line code names, under the documented code conventions."""
        for prefix in self.params.service_code_prefixes:
            code = pl.when(code.str.starts_with(prefix)).then(code.str.strip_prefix(prefix)).otherwise(code)
        return code.str.split(":").list.first()

    @staticmethod
    def _known_services(dependencies: pl.DataFrame, services: Any) -> set[str]:
        known = set(dependencies["service_id"].drop_nulls().to_list())
        if isinstance(services, pl.DataFrame) and services.height:
            known |= set(services["id" if "id" in services.columns else "service_id"].drop_nulls().to_list())
        elif services is not None and not isinstance(services, pl.DataFrame):
            known |= set(services)
        return known

    def _unknown_services(
        self, drafts: pl.DataFrame, as_of: datetime, dependencies: pl.DataFrame | None, services: Any
    ) -> list[dict[str, Any]]:
        if drafts.height == 0 or dependencies is None:
            return []
        known = self._known_services(dependencies, services)
        if not known:
            return []
        has = (
            dependencies.select("customer_id", "service_id").unique().with_columns(pl.lit(True).alias("has"))
        )
        lines = (
            self._draft_lines(drafts)
            .with_columns(self._service_of(pl.col("code")).alias("service_id"))
            .filter(pl.col("service_id").is_in(pl.Series(sorted(known)).implode()))
            .join(has, on=["customer_id", "service_id"], how="left")
            .filter(pl.col("has").is_null())
            .group_by("customer_id", "invoice_id", "currency", "service_id", maintain_order=True)
            .agg(pl.col("description").first(), pl.col("amount").sum(), pl.col("code"))
            .sort("customer_id", "invoice_id", "service_id")
        )
        rows = []
        for r in lines.iter_rows(named=True):
            text = (
                f"Your upcoming bill includes {r['description'] or r['service_id']} "
                f"({_money(r['amount'] or 0.0, r['currency'])}), a service that is not on your account; "
                "we are checking it before the bill is issued."
            )
            rows.append(
                self._finding(
                    r["customer_id"],
                    f"billing:unknown_service:{r['invoice_id']}:{r['service_id']}",
                    as_of,
                    score=float(r["amount"] or 0.0),
                    confidence=0.8,
                    severity="warning",
                    explanation=text,
                    evidence={
                        "invoice_id": r["invoice_id"],
                        "service_id": r["service_id"],
                        "codes": r["code"],
                        "amount": r["amount"],
                        "customer_services": sorted(
                            dependencies.filter(pl.col("customer_id") == r["customer_id"])[
                                "service_id"
                            ].to_list()
                        ),
                    },
                )
            )
        return rows

    def _usage_mismatch(
        self,
        drafts: pl.DataFrame,
        as_of: datetime,
        usage: pl.DataFrame | None,
        customers: pl.DataFrame | None,
    ) -> list[dict[str, Any]]:
        p = self.params
        limits = plan_limits(customers, p.limit_attribute)
        if drafts.height == 0 or usage is None or usage.height == 0 or limits.height == 0:
            return []
        codes = pl.Series(list(p.overage_codes)).implode()
        over_lines = (
            self._draft_lines(drafts)
            .filter(pl.col("code").str.split(":").list.first().is_in(codes) & (pl.col("amount") > 0))
            .group_by("customer_id", "invoice_id", "currency", "period_start", "period_end")
            .agg(
                pl.col("amount").sum(),
                pl.col("quantity").sum().alias("quantity"),
                pl.col("quantity").is_null().any().alias("qty_missing"),
                pl.col("description").first(),
            )
            .join(limits, on="customer_id")
        )
        if over_lines.height == 0:
            return []
        used = (
            point_in_time(usage, as_of)
            .filter(pl.col("metric") == p.usage_metric)
            .select(
                "customer_id",
                usage_day(pl.col("ts"), p.usage_stamp).alias("day"),
                "value",
                *(
                    [pl.col("period")]
                    if "period" in usage.columns
                    else [pl.lit(None, dtype=pl.String()).alias("period")]
                ),
            )
            .join(
                over_lines.select("customer_id", "invoice_id", "period_start", "period_end"), on="customer_id"
            )
            .filter(pl.col("day") >= pl.col("period_start"), pl.col("day") <= pl.col("period_end"))
            .group_by("invoice_id")
            .agg(
                pl.col("value").sum().alias("used"),
                pl.col("day").n_unique().alias("days_with_usage"),
                (pl.col("period") == "month").any().alias("monthly"),
            )
        )
        checked = (
            over_lines.join(used, on="invoice_id", how="left")
            .with_columns(
                ((pl.col("period_end") - pl.col("period_start")).dt.total_days() + 1).alias("period_days"),
                pl.col("used").fill_null(0.0),
                pl.col("days_with_usage").fill_null(0),
                pl.col("monthly").fill_null(False),
            )
            .with_columns(
                (pl.col("days_with_usage") / pl.col("period_days")).clip(0.0, 1.0).alias("coverage"),
                (pl.col("used") - pl.col("plan_limit")).clip(0.0).alias("excess"),
            )
            .filter(pl.col("monthly") | (pl.col("coverage") >= p.min_usage_coverage))
        )
        allowed = pl.col("excess") * (1 + p.overage_tolerance) + p.overage_tolerance_abs
        fired = checked.filter(
            (pl.col("excess") <= 0) | (~pl.col("qty_missing") & (pl.col("quantity") > allowed))
        ).sort("customer_id", "invoice_id")
        rows = []
        for r in fired.iter_rows(named=True):
            amount = _money(r["amount"], r["currency"])
            used_text = f"{r['used']:.1f} {p.unit}"
            limit_text = f"{r['plan_limit']:g} {p.unit}"
            if r["excess"] <= 0:
                what = f"but your data use this period was {used_text}, within your {limit_text} allowance"
            else:
                what = (
                    f"for {r['quantity']:g} {p.unit} over your allowance, but your data use this period was "
                    f"{used_text}, {r['excess']:.1f} {p.unit} over your {limit_text} allowance"
                )
            text = (
                f"Your upcoming bill charges {amount} for {r['description'] or 'overage'} {what}; "
                "we are correcting it before the bill is issued."
            )
            rows.append(
                self._finding(
                    r["customer_id"],
                    f"billing:usage_mismatch:{r['invoice_id']}",
                    as_of,
                    score=float(r["amount"]),
                    confidence=float(1.0 if r["monthly"] else r["coverage"]),
                    severity="warning",
                    explanation=text,
                    evidence={
                        "invoice_id": r["invoice_id"],
                        "period": [r["period_start"].isoformat(), r["period_end"].isoformat()],
                        "overage_amount": r["amount"],
                        "overage_quantity": None if r["qty_missing"] else r["quantity"],
                        "metric": p.usage_metric,
                        "used": round(r["used"], 3),
                        "plan_limit": r["plan_limit"],
                        "excess": round(r["excess"], 3),
                        "usage_coverage": round(r["coverage"], 3),
                    },
                )
            )
        return rows
