"""The trip wires forewarn ships, by name. Each entry is a class following ``forewarn.detect.base.TripWire``.

>>> sorted(TRIP_WIRES)
['billing', 'cadence', 'devices', 'opportunity', 'schedule', 'usage']
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

TRIP_WIRES: dict[str, str] = {
    "usage": "forewarn.detect.usage:UsageTripWire",
    "cadence": "forewarn.detect.cadence:CadenceTripWire",
    "billing": "forewarn.detect.billing:BillingTripWire",
    "devices": "forewarn.detect.devices:DeviceTripWire",
    "schedule": "forewarn.detect.schedule:ScheduleTripWire",
    "opportunity": "forewarn.detect.opportunity:OpportunityTripWire",
}


def load(name: str, **params: Any) -> Any:
    """An instance of the trip wire called ``name`` with ``params`` overriding its defaults."""
    try:
        target = TRIP_WIRES[name]
    except KeyError:
        raise ValueError(f"unknown trip wire {name!r}; expected one of {', '.join(TRIP_WIRES)}") from None
    module, cls = target.split(":")
    return getattr(import_module(module), cls)(**params)
