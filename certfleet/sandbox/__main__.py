"""``python -m certfleet.sandbox``."""

from __future__ import annotations

import sys

from certfleet.sandbox.program import main

sys.exit(main())
