"""Incidents: opened by people, Alertmanager, uptime monitors or service-level anomalies; who they affect is
derived from data; each affected customer gets a notice series in one thread; inbound contacts get linked.

Importing this package registers the incident templates' context with the delivery renderer.
"""

from forewarn.incidents.context import register as _register_templates

_register_templates()
