"""forewarn: proactive customer service. Tell customers about a problem before they have to call.

The pipeline, one package per stage: ``signals`` -> ``detect`` -> ``decide`` -> ``deliver``, with ``incidents``
feeding outage notices, ``measure`` closing the loop, ``sim`` a simulated company with ground truth, and
``api`` / ``web`` / ``cli`` as the faces. ``state`` is the relational state store.
"""

__version__ = "0.1.0"
