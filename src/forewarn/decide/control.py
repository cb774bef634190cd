"""Control groups: a stable, uniform hash of (customer, playbook) decides who is held out.

The same customer stays in (or out of) a playbook's control group across runs, machines and backtests, and
different playbooks hold out independent groups. Changing the share only moves the boundary: raising it from
10% to 20% keeps the first 10% held out.

>>> bucket("c1", "billing-shock") == bucket("c1", "billing-shock")
True
>>> 0.0 <= bucket("c1", "billing-shock") < 1.0
True
>>> in_control("c1", "billing-shock", 0.0)
False
>>> share = sum(in_control(f"c{i}", "p", 0.2) for i in range(10_000)) / 10_000
>>> 0.18 < share < 0.22
True
"""

from __future__ import annotations

import hashlib


def bucket(customer_id: str, playbook: str) -> float:
    """A number in [0, 1), the same for the same (customer, playbook) everywhere."""
    digest = hashlib.blake2b(f"{playbook}\x00{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def in_control(customer_id: str, playbook: str, share: float) -> bool:
    """Is this customer in the playbook's held-out control group of size ``share`` (0..1)?"""
    return share > 0 and bucket(customer_id, playbook) < share
