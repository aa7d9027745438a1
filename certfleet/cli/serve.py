"""``certfleet serve``: the order API and the HTTP-01 approval route on a local port.

``--config`` is the sync config or the HTTP-side config (``certfleet http-config``);
``--host`` defaults to 127.0.0.1 (put a TLS-terminating proxy in front before exposing
it), ``--port`` to 8080 (0 picks a free one). The address is printed on stderr once the
socket listens; SIGTERM or SIGINT stops it, SIGHUP reads the config again (new API keys
take effect; a broken config is reported and the running one kept).
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from certfleet.cli.context import Context
from certfleet.cli.errors import UsageError
from certfleet.errors import CertfleetError
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
    stop, reload = threading.Event(), threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: reload.set())
    thread = threading.Thread(target=server.serve_forever, name="certfleet-serve", daemon=True)
    thread.start()
    what = "the order API for " + (", ".join(settings.clusters) or "no cluster")
    if settings.acme_thumbprint is None:
        what += "; no ACME account, so no challenge answers"
    ctx.note(f"certfleet serve: listening on http://{args.host}:{server.port} ({what})")
    try:
        while not stop.wait(0.2):
            if reload.is_set():
                reload.clear()
                _reload(server, args.config, ctx)
    finally:
        server.shutdown()
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ctx.note("certfleet serve: stopped")
    return 0


def _reload(server: ApiServer, config: str, ctx: Context) -> None:
    """SIGHUP: read the config again (new keys, clusters); a broken one keeps the old."""
    try:
        server.api = build_api(load_settings(config))
    except (CertfleetError, OSError) as err:
        ctx.note(f"certfleet serve: config not reloaded, the running one is kept: {err}")
        return
    ctx.note("certfleet serve: config reloaded")
