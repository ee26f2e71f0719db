"""The ``massager`` command line (DESIGN.md section 4)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``massager`` console script."""
    print("massager: not yet wired", file=sys.stderr)
    return 2
