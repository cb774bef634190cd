"""A simulated ISP / telco with ground truth, for the demo, tests, backtests and benchmarks.

``forewarn.sim.world.simulate(SimConfig(...), out)`` builds the world (and writes the files that
``forewarn ingest`` reads when ``out`` is given); ``World.truth`` is every injected event;
``forewarn.sim.reactions.contacts_given_notices`` replays the inbound contacts as if notices had been sent.
One module per generator: ``customers usage cadence billing devices outages schedule contacts social``;
``reactions`` (who calls, when, and what a notice avoids), ``truth`` (the ground-truth records) and ``clock``
(time zones, seeded random streams).
"""
