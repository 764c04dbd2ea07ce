"""Every HTTP header the fleet reads or writes, named once.

Answers say who served them (``ROUTE`` ... ``VIA_ROUTE``); clients may pin a version, keep a
session sticky and ask for an explanation; ``DISPATCHED_AT`` is internal (router -> replica).
HTTP header names are case-insensitive: the router reads the lower-case forms.
"""

from __future__ import annotations

# Who answered, on every answer.
ROUTE = "X-SLMFleet-Route"
"""The route the client named."""
BASE_MODEL = "X-SLMFleet-Base-Model"
"""The base model (deployment) that answered."""
ADAPTER = "X-SLMFleet-Adapter"
"""The adapter that answered (adapter targets only)."""
VERSION = "X-SLMFleet-Version"
"""The adapter version that answered; on a request, pins one of the route's versions (canary probes)."""
VIA_ROUTE = "X-SLMFleet-Via-Route"
"""A classify route's class that names another route: that route, which answered."""

# Cascade routes.
TIER = "X-SLMFleet-Tier"
"""The 1-based tier that answered."""
TIER_NAME = "X-SLMFleet-Tier-Name"
"""That tier, described (adapter@version, base NAME, route NAME, or model at URL)."""
ESCALATIONS = "X-SLMFleet-Escalations"
"""Why each earlier tier's answer was not used."""
EXPLAIN = "X-SLMFleet-Explain"
"""On a request: ``true`` adds the cascade's explanation to the JSON body (``slmfleet``)."""

# Classify routes.
CLASS = "X-SLMFleet-Class"
"""The task class picked, or ``default``."""
CLASSIFIED_BY = "X-SLMFleet-Classified-By"
"""How: keyword, regex, embedding (with its similarity) or default."""

# Requests.
SESSION = "X-Session-Id"
"""Keeps a conversation on one target of a route (as the OpenAI ``user`` field does)."""
TIMEOUT = "X-SLMFleet-Timeout"
"""On a request: its deadline in seconds (e.g. ``5`` or ``2.5``), shorter than the fleet's requestTimeout."""
DEADLINE = "X-SLMFleet-Deadline"
"""Internal: wall-clock time (s) by which the replica must have finished the request (it stops the generation)."""
RETRY = "X-SLMFleet-Retry"
"""Internal: on the second try of a request whose replica failed it; placement avoids that replica."""
DISPATCHED_AT = "X-SLMFleet-Dispatched-At"
"""Internal: wall-clock time (s) at which the router handed the request to a base-model replica."""
