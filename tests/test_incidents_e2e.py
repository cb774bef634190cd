"""End to end: an incident's notice series delivered by the real worker through a real SMTP server (email) and
a real HTTP receiver (SMS gateway), complete, in order, rendered in the customer's time zone; linked contacts
answered the same way; per-incident metrics from what was delivered."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from forewarn.config import Settings
from forewarn.context import Context
from forewarn.deliver.receivers import SmtpReceiver, WebhookReceiver
from forewarn.deliver.worker import Worker
from forewarn.incidents import service
from forewarn.incidents.link import link_tickets
from forewarn.incidents.metrics import incident_metrics
from forewarn.state.db import transaction, upgrade
from forewarn.state.models import Ticket
from incident_helpers import T0, seed_isp


def test_series_arrives_complete_and_in_order(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    with SmtpReceiver() as smtp, WebhookReceiver() as hook:
        ctx = Context(
            Settings(
                home=tmp_path,
                database_url=url,
                public_url="https://status.isp.example",
                smtp={"host": "127.0.0.1", "port": smtp.port, "sender": "noc@isp.example"},
                webhook={"gateways": {"sms": hook.url}},
                delivery={"quiet_hours_start": 0, "quiet_hours_end": 0},
            )
        )
        seed_isp(ctx.engine)
        worker = Worker(ctx)
        with transaction(ctx.engine) as s:
            inc = service.open_incident(
                s,
                title="Internet outage",
                services=["internet"],
                regions=["north"],
                message="A fibre cable was cut.",
                now=T0,
            )
        worker.drain(now=T0 + timedelta(minutes=1))
        with transaction(ctx.engine) as s:
            service.post_update(
                s,
                inc.id,
                status="identified",
                message="Repair crew on site.",
                eta=T0 + timedelta(hours=3),
                now=T0 + timedelta(minutes=30),
            )
            s.add(
                Ticket(
                    external_id="t1",
                    customer_id="C02",
                    channel="phone",
                    text="internet down",
                    opened_at=T0 + timedelta(minutes=40),
                )
            )
        link_tickets(ctx, now=T0 + timedelta(minutes=45))
        with transaction(ctx.engine) as s:  # the outage spreads south: C06..C08 are caught up, C07 by sms
            service.widen(s, inc.id, [service.Scope("internet", "south")], now=T0 + timedelta(minutes=45))
        worker.drain(now=T0 + timedelta(minutes=46))
        with transaction(ctx.engine) as s:
            service.resolve_incident(s, inc.id, message="Repaired.", now=T0 + timedelta(hours=2))
        worker.drain(now=T0 + timedelta(hours=2, minutes=1))
        worker.close()

        mails: dict[str, list] = defaultdict(list)
        for m in smtp.messages:
            msg = m.message()
            mails[m.rcpt_tos[0]].append(msg)
        texts = defaultdict(list)
        for r in hook.received:
            texts[r.json().get("to") or r.json().get("address")].append(r.json())

        # email customers in north with consent: C00, C02 (email first), C01 (sms refused -> email), C04
        north = {"c00@example.test", "c01@example.test", "c02@example.test", "c04@example.test"}
        assert set(mails) == north | {"c06@example.test", "c08@example.test"}
        for addr, msgs in mails.items():
            subjects = [m["Subject"] for m in msgs if not m["Subject"].startswith("Re:")]
            if addr in north:
                assert subjects == [
                    "Internet outage (north)",
                    "Update: Internet outage",
                    "Resolved: Internet outage",
                ]
            else:  # caught up with the latest status, then the all-clear
                assert subjects == ["Internet outage (north and south)", "Resolved: Internet outage"]
                assert "Repair crew on site." in msgs[0].get_content()
        c00 = mails["c00@example.test"][0].get_content()
        # 09:00 UTC is 10:00 in Amsterdam; the ETA 12:00 UTC is 13:00 local
        assert "10:00 AM (CET)" in c00 and "A fibre cable was cut." in c00
        assert "https://status.isp.example/status/internet" in c00
        assert "1:00 PM (CET)" in mails["c00@example.test"][1].get_content()
        # the linked contact got an auto-reply in its thread
        assert [m["Subject"] for m in mails["c02@example.test"]].count("Re: Internet outage") == 1
        # C07 (south) prefers sms: its two texts went to the SMS gateway, with idempotency keys
        [(phone, sms)] = texts.items()
        assert phone == "+31600000007" and len(sms) == 2
        assert "Repair crew on site." in str(sms[0]) and "Fixed" in str(sms[1])
        assert len({r.key for r in hook.received}) == len(hook.received) == 2

        with transaction(ctx.engine) as s:
            m = incident_metrics(s, inc.id, now=T0 + timedelta(hours=3))
        assert m.notified["sent"] == 12 + 6 and m.notified["suppressed"] == 6
        assert m.time_to_first_delivered_s["n"] == 7 and m.time_to_first_delivered_s["p50"] > 0
        assert m.contacts_during == 1 and m.contacts_after_notice == 1 and m.tickets_linked == 1
