"""The knobs of the simulated company: regions, plans, services and every injection rate.

All rates are per customer (or per device, per invoice) over the simulated period unless named otherwise,
so a small world and a large one have the same mix. ``SimConfig`` is frozen: derive variants with
``dataclasses.replace``, or start from a named world (:data:`CONFIGS`, :func:`named`).

>>> cfg = SimConfig(customers=100, days=60, seed=7)
>>> cfg.end.isoformat()
'2026-03-02T00:00:00+00:00'
>>> cfg.reactions["outage"].p_avoid
0.7
>>> named("noisy", customers=100, seed=7).cadence_shape
2.5
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Region:
    name: str
    timezone: str  # IANA
    locale: str
    phone_prefix: str
    currency: str
    tax_rate: float
    weight: float


@dataclass(frozen=True)
class Plan:
    name: str
    services: tuple[str, ...]
    limit_gb: float | None  # monthly data allowance; None = unlimited
    monthly_fee: float  # 0 for prepaid (pays by top-ups)
    daily_gb: float  # median daily data volume of a customer on this plan
    weight: float
    prepaid: bool = False


@dataclass(frozen=True)
class ServiceDef:
    id: str
    name: str
    description: str
    outage_weight: float  # how likely an outage hits this service
    requests_per_customer: float  # requests per 5 minutes per dependent customer at the daily peak


@dataclass(frozen=True)
class Reaction:
    """How customers react to one kind of problem when nobody warned them.

    ``p_contact``: chance an affected customer contacts us; ``delay_median_h`` / ``delay_sigma``: lognormal
    delay from the moment the problem reaches them; ``p_avoid``: chance a timely notice (sent before the
    contact would have happened) makes the contact unnecessary.
    """

    p_contact: float
    delay_median_h: float
    delay_sigma: float
    p_avoid: float


REGIONS: tuple[Region, ...] = (
    Region("uk-north", "Europe/London", "en-GB", "+44", "GBP", 0.20, 0.24),
    Region("uk-south", "Europe/London", "en-GB", "+44", "GBP", 0.20, 0.20),
    Region("ie", "Europe/Dublin", "en-IE", "+353", "EUR", 0.23, 0.10),
    Region("us-east", "America/New_York", "en-US", "+1", "USD", 0.07, 0.20),
    Region("us-west", "America/Los_Angeles", "en-US", "+1", "USD", 0.08, 0.15),
    Region("au-east", "Australia/Sydney", "en-AU", "+61", "AUD", 0.10, 0.11),
)

SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("broadband", "Home broadband", "Fibre and DSL internet access at home", 0.40, 6.0),
    ServiceDef("mobile", "Mobile", "Mobile voice and data", 0.20, 4.0),
    ServiceDef("tv", "TV", "IPTV channels and recordings", 0.15, 3.0),
    ServiceDef("voip", "Home phone", "Voice over IP landline", 0.10, 0.5),
    ServiceDef("email", "Email hosting", "Mailboxes on the company's domain", 0.15, 1.0),
)

PLANS: tuple[Plan, ...] = (
    Plan("lite-100", ("broadband", "email"), 100.0, 25.0, 1.05, 0.22),
    Plan("std-300", ("broadband", "email", "voip"), 300.0, 35.0, 3.1, 0.26),
    Plan("max-unl", ("broadband", "email", "voip"), None, 55.0, 7.0, 0.12),
    Plan("bundle-tv", ("broadband", "tv", "voip", "email"), 500.0, 70.0, 5.2, 0.15),
    Plan("mobile-30", ("mobile",), 30.0, 20.0, 0.32, 0.13),
    Plan("mobile-prepaid", ("mobile",), 15.0, 0.0, 0.16, 0.12, prepaid=True),
)

# Add-on services a postpaid customer can have beyond the plan, their monthly fee and the share who take them.
ADDONS: dict[str, tuple[float, float]] = {"mobile": (15.0, 0.18), "tv": (20.0, 0.10), "email": (3.0, 0.05)}


def default_reactions() -> dict[str, Reaction]:
    """Per problem type: who contacts us, how soon, and how often a timely notice avoids it."""
    return {
        "outage": Reaction(0.20, 0.6, 1.0, 0.7),
        "maintenance": Reaction(0.08, 0.5, 0.9, 0.8),
        "bill_shock": Reaction(0.35, 60.0, 0.8, 0.6),
        "billing_error": Reaction(0.50, 72.0, 0.8, 0.8),
        "device_failure": Reaction(0.60, 6.0, 1.0, 0.5),
        "shipment_delay": Reaction(0.40, 10.0, 0.9, 0.75),
        "usage_drop": Reaction(0.30, 20.0, 0.9, 0.4),
        "usage_spike": Reaction(0.06, 30.0, 0.9, 0.5),
        "level_shift": Reaction(0.10, 72.0, 1.0, 0.5),
        "near_limit": Reaction(0.15, 8.0, 1.0, 0.6),
        "card_expiry": Reaction(0.30, 48.0, 0.8, 0.7),
        "renewal_due": Reaction(0.20, 72.0, 0.9, 0.5),
    }


@dataclass(frozen=True)
class SimConfig:
    customers: int = 10_000
    days: int = 180
    seed: int = 0
    start: date = date(2026, 1, 1)
    regions: tuple[Region, ...] = REGIONS
    services: tuple[ServiceDef, ...] = SERVICES
    plans: tuple[Plan, ...] = PLANS
    # no anomaly starts before this many days of history (capped at a third of short worlds)
    min_history_days: int = 35

    # usage: level per customer (lognormal around the plan's median), weekend boost, multiplicative noise
    level_sigma: float = 0.45
    weekend_boost: tuple[float, float] = (1.05, 1.45)
    usage_noise_sigma: float = 0.22
    season_amplitude: float = 0.0  # a slower cycle on top of the weekly one: 0.25 = +-25%
    season_period_days: float = 30.44
    p_usage_spike: float = 0.03
    spike_factor: tuple[float, float] = (2.8, 5.0)
    spike_days: tuple[int, int] = (1, 3)
    p_usage_drop: float = 0.02
    drop_factor: tuple[float, float] = (0.08, 0.3)
    drop_days: tuple[int, int] = (3, 10)
    p_level_shift: float = 0.02
    shift_up: tuple[float, float] = (1.8, 2.6)
    shift_down: tuple[float, float] = (0.3, 0.5)
    p_went_silent: float = 0.01
    near_limit_share: float = 0.8  # share of the allowance that counts as "near"

    # purchase / visit cadence
    p_purchase_lapse: float = 0.08  # of prepaid customers (who top up)
    purchase_interval_days: tuple[float, float] = (6.0, 24.0)
    p_visitor: float = 0.12  # share of postpaid customers with a visit habit (store, app check-ins)
    visit_interval_days: tuple[float, float] = (8.0, 30.0)
    p_visit_lapse: float = 0.08
    cadence_shape: float = 4.0  # gamma shape of the gaps: higher = more regular

    # billing
    p_roaming_small: float = 0.05  # per mobile invoice: ordinary roaming charges
    p_roaming_shock: float = 0.04  # per mobile customer over the period
    roaming_shock: tuple[float, float] = (45.0, 260.0)
    p_price_change: float = 0.04  # promotional price ends: base fee jumps
    price_change: tuple[float, float] = (1.45, 1.8)
    p_billing_error: float = 0.012  # per draft invoice
    overage_per_gb: float = 1.5
    bill_shock_ratio: float = 1.35  # a total this much above the usual (median of the last three) is a shock
    bill_shock_min_delta: float = 12.0
    p_device_instalment: float = 0.2
    p_loyalty_discount: float = 0.15

    # devices (recorders with disks, SMART-like counters)
    p_device_failure: float = 0.05
    degrade_days: tuple[int, int] = (7, 35)
    p_benign_noise: float = 0.06

    # outages and maintenance
    outages_per_30_days: float = 1.0
    p_outage_widens: float = 0.35
    outage_median_h: float = 1.5
    outage_sigma: float = 0.7
    maintenance_per_30_days: float = 0.5

    # schedule
    p_renewal_due: float = 0.08
    p_card_expiry: float = 0.05
    p_shipment: float = 0.06  # new device orders over the period
    p_shipment_late: float = 0.25

    # contacts and feedback
    background_contacts_per_day: float = 0.0015  # per customer
    social_posts_per_day: float = 0.0002  # per customer, unrelated to any problem
    p_outage_social_post: float = 0.02
    p_survey_answer: float = 0.25
    reactions: dict[str, Reaction] = field(default_factory=default_reactions)

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError(f"customers must be at least 1, got {self.customers}")
        if self.days < 14:
            raise ValueError(f"days must be at least 14 (anomalies need history), got {self.days}")

    @property
    def start_dt(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start_dt + timedelta(days=self.days)

    @property
    def history_days(self) -> int:
        """First day an anomaly may start on."""
        return min(self.min_history_days, self.days // 3)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        return d


# Named worlds, so a benchmark can say which world it measured on (not ad-hoc flags). ``noisy`` differs from
# ``default`` in noise (usage noise, spread of levels, irregular rhythms), seasonality (weekends that can be
# quieter as well as busier, a monthly cycle of +-25%) and event rates (about 1.5-2x as many anomalies, lapses,
# failures, billing errors, outages, contacts), so a detector tuned on one is tested on another.
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "noisy": {
        "level_sigma": 0.6,
        "usage_noise_sigma": 0.35,
        "weekend_boost": (0.75, 1.6),
        "season_amplitude": 0.25,
        "p_usage_spike": 0.05,
        "p_usage_drop": 0.035,
        "p_level_shift": 0.03,
        "p_went_silent": 0.02,
        "p_purchase_lapse": 0.14,
        "purchase_interval_days": (4.0, 30.0),
        "p_visitor": 0.18,
        "p_visit_lapse": 0.14,
        "cadence_shape": 2.5,
        "p_roaming_small": 0.1,
        "p_roaming_shock": 0.07,
        "p_price_change": 0.07,
        "p_billing_error": 0.02,
        "p_device_failure": 0.08,
        "p_benign_noise": 0.12,
        "outages_per_30_days": 1.6,
        "maintenance_per_30_days": 0.8,
        "p_renewal_due": 0.12,
        "p_card_expiry": 0.08,
        "p_shipment": 0.1,
        "p_shipment_late": 0.35,
        "background_contacts_per_day": 0.003,
    },
}


def named(name: str, **fields: Any) -> SimConfig:
    """The named world ``name`` (see :data:`CONFIGS`) with ``fields`` (customers, days, seed, ...) set.

    >>> named("default", seed=3) == SimConfig(seed=3)
    True
    >>> named("calm")
    Traceback (most recent call last):
    ValueError: unknown simulator config 'calm'; expected one of default, noisy
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown simulator config {name!r}; expected one of {', '.join(CONFIGS)}")
    return SimConfig(**{**CONFIGS[name], **fields})
