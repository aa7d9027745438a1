"""The certfleet sync as an AWS Lambda: one scheduled handler that runs the sync engine.

The rate below is what ``chalice deploy`` would use; the SAM template replaces it with its
``SyncSchedule`` parameter (``infra/sam/stack.yaml``).
"""

from __future__ import annotations

from typing import Any

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent
from chalicelib.logformat import install_json_logging
from chalicelib.runner import ScheduledSync

app = Chalice(app_name="certfleet-sync")
install_json_logging()
scheduled_sync = ScheduledSync()


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sync")
def sync(event: CloudWatchEvent) -> dict[str, Any]:
    context: Any = event.context  # the Lambda context (Chalice's annotation is too loose)
    return scheduled_sync.run(context.get_remaining_time_in_millis())
