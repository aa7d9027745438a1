"""``certfleet serve``: the order API and the HTTP-01 approval route on a local port.

``--config`` is the sync config or the HTTP-side config (``certfleet http-config``);
``--host`` defaults to 127.0.0.1 (put a TLS-terminating proxy in front before exposing
it), ``--port`` to 8080 (0 picks a free one). The address is printed on stderr once the
socket listens; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.serve import ApiServer, build_api, load_settings

DEFAULT_PORT = 8080


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the order API and the ACME HTTP-01 route",
        description="Serve GET /.well-known/acme-challenge/TOKEN and, for clusters in ACME "
        "mode, the order API under /api/v3/orders (API keys: certfleet api-keys).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace, ctx: Context) -> int:
    if args.config is None:
        raise UsageError("--config FILE is required: the sync config or the order API's config")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number")
    settings = load_settings(args.config)
    server = ApiServer(build_api(settings), args.host, args.port)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    thread = threading.Thread(target=server.serve_forever, name="certfleet-serve", daemon=True)
    thread.start()
    what = "the order API for " + (", ".join(settings.clusters) or "no cluster")
    if settings.acme_thumbprint is None:
        what += "; no ACME account, so no challenge answers"
    ctx.note(f"certfleet serve: listening on http://{args.host}:{server.port} ({what})")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ctx.note("certfleet serve: stopped")
    return 0
