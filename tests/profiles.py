"""The suite's two profiles: the default keeps a whole run within its time budget (README); the long one
(``MASSAGER_CAMPAIGN=1``, ``scripts/test --campaign``) runs the property-based tests at length."""

from __future__ import annotations

import os

CAMPAIGN = os.environ.get("MASSAGER_CAMPAIGN") == "1"


def examples(default: int, campaign: int) -> int:
    """How many examples a property-based test draws in this profile."""
    return campaign if CAMPAIGN else default
