"""The certfleet sync as an AWS Lambda: one scheduled handler that runs the sync engine, and
one function behind a Lambda Function URL that serves the order API and the ACME HTTP-01
route (``certfleet.serve``, the same code as ``certfleet serve``).

The rate below is what ``chalice deploy`` would use; the SAM template replaces it with its
``SyncSchedule`` parameter (``infra/sam/stack.yaml``).
"""

from __future__ import annotations

from typing import Any

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent
from chalicelib.httpapi import HttpFunction
from chalicelib.logformat import install_json_logging
from chalicelib.runner import ScheduledSync

app = Chalice(app_name="certfleet-sync")
install_json_logging()
scheduled_sync = ScheduledSync()
http_function = HttpFunction()


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sync")
def sync(event: CloudWatchEvent) -> dict[str, Any]:
    context: Any = event.context  # the Lambda context (Chalice's annotation is too loose)
    return scheduled_sync.run(context.get_remaining_time_in_millis())


@app.lambda_function(name="http")
def http(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A Function URL request (payload format 2.0); Chalice's routes serve API Gateway only."""
    return http_function.handle(event)
