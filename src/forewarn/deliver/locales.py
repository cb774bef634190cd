"""Dates and times in the customer's time zone and language (no babel): a table for en, de, fr, es, nl.

Locales are matched on their language part (``de-AT`` and ``de_CH`` use ``de``); anything else uses ``en``.
Zone abbreviations come from the IANA database (``CET``, ``EST``...), not translated. English uses a 12-hour
clock, the others 24 hours. To add a language, add one entry to ``LOCALES`` (and its ``PHRASES``).

>>> from datetime import datetime, UTC
>>> t = datetime(2026, 11, 23, 13, 30, tzinfo=UTC)
>>> format_datetime(t, "America/New_York", "en-US")
'Monday, November 23, 2026 at 8:30 AM (EST)'
>>> format_datetime(t, "Europe/Berlin", "de")
'Montag, 23. November 2026, 14:30 Uhr (CET)'
>>> format_time(t, "Europe/Amsterdam", "nl"), format_date(t, "Europe/Paris", "fr")
('14:30', 'lundi 23 novembre 2026')
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from forewarn.deliver.quiet_hours import zone

LOCALES: dict[str, dict[str, Any]] = {
    "en": {
        "weekdays": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        "months": [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
        "date": "{weekday}, {month} {day}, {year}",
        "time": "{h12}:{minute:02d} {ampm}",
        "datetime": "{date} at {time} ({tz})",
    },
    "de": {
        "weekdays": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
        "months": [
            "Januar",
            "Februar",
            "März",
            "April",
            "Mai",
            "Juni",
            "Juli",
            "August",
            "September",
            "Oktober",
            "November",
            "Dezember",
        ],
        "date": "{weekday}, {day}. {month} {year}",
        "time": "{hour:02d}:{minute:02d}",
        "datetime": "{date}, {time} Uhr ({tz})",
    },
    "fr": {
        "weekdays": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
        "months": [
            "janvier",
            "février",
            "mars",
            "avril",
            "mai",
            "juin",
            "juillet",
            "août",
            "septembre",
            "octobre",
            "novembre",
            "décembre",
        ],
        "date": "{weekday} {day} {month} {year}",
        "time": "{hour:02d}:{minute:02d}",
        "datetime": "{date} à {time} ({tz})",
    },
    "es": {
        "weekdays": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
        "months": [
            "enero",
            "febrero",
            "marzo",
            "abril",
            "mayo",
            "junio",
            "julio",
            "agosto",
            "septiembre",
            "octubre",
            "noviembre",
            "diciembre",
        ],
        "date": "{weekday}, {day} de {month} de {year}",
        "time": "{hour:02d}:{minute:02d}",
        "datetime": "{date}, {time} ({tz})",
    },
    "nl": {
        "weekdays": ["maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag"],
        "months": [
            "januari",
            "februari",
            "maart",
            "april",
            "mei",
            "juni",
            "juli",
            "augustus",
            "september",
            "oktober",
            "november",
            "december",
        ],
        "date": "{weekday} {day} {month} {year}",
        "time": "{hour:02d}:{minute:02d}",
        "datetime": "{date} om {time} ({tz})",
    },
}

# short phrases templates share across languages: {{ t("greeting") }}
PHRASES: dict[str, dict[str, str]] = {
    "greeting": {"en": "Hello", "de": "Hallo", "fr": "Bonjour", "es": "Hola", "nl": "Hallo"},
    "eta": {
        "en": "Expected fix",
        "de": "Voraussichtlich behoben",
        "fr": "Rétablissement prévu",
        "es": "Solución prevista",
        "nl": "Verwachte oplossing",
    },
    "no_eta": {
        "en": "We do not have an estimate yet.",
        "de": "Wir haben noch keine Schätzung.",
        "fr": "Nous n'avons pas encore d'estimation.",
        "es": "Aún no tenemos una estimación.",
        "nl": "We hebben nog geen schatting.",
    },
    "status_page": {
        "en": "Status page",
        "de": "Statusseite",
        "fr": "Page d'état",
        "es": "Página de estado",
        "nl": "Statuspagina",
    },
}


def language(locale: str | None) -> str:
    """The table entry used for ``locale``.

    >>> language("de_AT"), language("pt-BR"), language(None)
    ('de', 'en', 'en')
    """
    lang = (locale or "en").replace("_", "-").split("-", 1)[0].lower()
    return lang if lang in LOCALES else "en"


def phrase(key: str, locale: str | None) -> str:
    """A shared phrase in the customer's language (English when missing)."""
    entry = PHRASES.get(key, {})
    return entry.get(language(locale)) or entry.get("en") or key


def as_datetime(value: Any) -> datetime | None:
    """An aware datetime from a datetime (naive means UTC) or an ISO-8601 string; ``None`` stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or ISO-8601 string, got {type(value).__name__}: {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _fields(value: Any, tz: str | None, locale: str | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    dt = as_datetime(value)
    if dt is None:
        return None
    local = dt.astimezone(zone(tz))
    table = LOCALES[language(locale)]
    hour12 = local.hour % 12 or 12
    return table, {
        "weekday": table["weekdays"][local.weekday()],
        "month": table["months"][local.month - 1],
        "day": local.day,
        "year": local.year,
        "hour": local.hour,
        "minute": local.minute,
        "h12": hour12,
        "ampm": "AM" if local.hour < 12 else "PM",
        "tz": local.tzname() or "UTC",
    }


def format_date(value: Any, tz: str | None = "UTC", locale: str | None = "en") -> str:
    got = _fields(value, tz, locale)
    return "" if got is None else got[0]["date"].format(**got[1])


def format_time(value: Any, tz: str | None = "UTC", locale: str | None = "en") -> str:
    got = _fields(value, tz, locale)
    return "" if got is None else got[0]["time"].format(**got[1])


def format_datetime(value: Any, tz: str | None = "UTC", locale: str | None = "en") -> str:
    got = _fields(value, tz, locale)
    if got is None:
        return ""
    table, f = got
    return table["datetime"].format(
        date=table["date"].format(**f), time=table["time"].format(**f), tz=f["tz"]
    )
