"""SSLMate's help page example of a REST order, run verbatim with curl: the sandbox, the order
API (``certfleet serve``) and the ACME walk-through all take it as it is written.

``HELP_PAGE_CURL`` is the page's command, ``KEY`` standing for the API key and
``https://HOST/api/v3`` for the API; :func:`curl_help_page` runs it.
"""

from __future__ import annotations

import shlex
import subprocess

from tests.plugins.binaries import require_binary

HELP_PAGE_CURL = (
    "curl -X POST -u KEY: -H 'Content-Type: application/json' -d "
    """'{"cluster": "webservers", "dns_names": ["example.com", "www.example.com"]}' """
    "https://HOST/api/v3/orders"
)


def curl_help_page(key: str, api_url: str) -> tuple[str, str]:
    """``HELP_PAGE_CURL`` with ``key`` and ``api_url`` (for ``https://HOST/api/v3``) filled in,
    run by curl with ``-s -w`` to print the status: the HTTP status and the body."""
    command = HELP_PAGE_CURL.replace("KEY", key).replace("https://HOST/api/v3", api_url)
    curl = [require_binary("curl"), *shlex.split(command)[1:], "-s", "-w", "\n%{http_code}"]
    done = subprocess.run(curl, capture_output=True, text=True, timeout=30, check=False)
    body, _, status = done.stdout.rpartition("\n")
    return status, body
