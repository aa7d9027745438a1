"""``python -m certfleet``: the admin CLI."""

from __future__ import annotations

import sys

from certfleet.cli import main

if __name__ == "__main__":
    sys.exit(main())
