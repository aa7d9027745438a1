"""``certfleet sandbox`` / ``python -m certfleet.sandbox``: run the APIv3 test double."""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from certfleet.sandbox.api import SandboxApi
from certfleet.sandbox.errors import DataDirError, SandboxError
from certfleet.sandbox.fault import FaultPlan
from certfleet.sandbox.server import SandboxServer
from certfleet.sandbox.state import OrderBook, OrderSpec, bulk_create, open_ca

_log = logging.getLogger(__name__)

DEFAULT_PORT = 8780
DEFAULT_API_KEY = "sandbox-key"
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

DESCRIPTION = """\
A local TEST DOUBLE of the SSLMate APIv3 - it is not SSLMate and its certificates are
trusted nowhere. It serves the APIv3 contract certfleet's client speaks under
http://127.0.0.1:PORT/api/v3 with a throw-away test CA whose root is at
/api/v3/sandbox/root.pem. Use it to try certfleet and to test clients; see docs/sandbox.md.
"""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the sandbox's options to ``parser`` (e.g. a CLI subparser) or to a new one."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="certfleet sandbox",
            description=DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--api-key",
        default=DEFAULT_API_KEY,
        help=f"the API key clients must send (default {DEFAULT_API_KEY!r})",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="keep orders, certificates and the test CA here across restarts "
        "(default: a temporary directory removed on exit)",
    )
    parser.add_argument(
        "--issue-delay",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="seconds from CSR to issued certificate (default 0)",
    )
    parser.add_argument(
        "--cert-lifetime",
        type=_seconds,
        default=90 * 86400.0,
        metavar="S",
        help="certificate lifetime: seconds, or 30m, 12h, 90d (default 90d); "
        "not_before is backdated one hour",
    )
    parser.add_argument(
        "--fault-rate",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction 0..1 of requests that fail on purpose: 500, 429 with Retry-After, "
        "dropped connection or truncated JSON (POST/PATCH/DELETE fail before taking effect)",
    )
    parser.add_argument("--seed", type=int, help="random seed that makes faults reproducible")
    parser.add_argument(
        "--latency", type=_seconds, default=0.0, metavar="S", help="seconds added per request"
    )
    parser.add_argument(
        "--unsafe-names",
        action="store_true",
        help="accept any order and DNS name, to test consumers' own defences",
    )
    parser.add_argument(
        "--seed-orders",
        metavar="FILE",
        help='create orders from a JSON-lines file at start: {"cluster", "dns_names", '
        '"name"?, "approval"?} per line; orders that exist are kept',
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="accepted, as by every certfleet command; the sandbox reads no config",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until SIGTERM or SIGINT; 0 after a clean stop, 1 if it cannot start."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the sandbox with options parsed by :func:`build_parser`'s parser."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    temporary = args.data is None
    data_dir = Path(tempfile.mkdtemp(prefix="certfleet-sandbox-") if temporary else args.data)
    try:
        try:
            server = _open(args, data_dir)
        except (SandboxError, OSError) as err:
            print(f"certfleet sandbox: {err}", file=sys.stderr)
            return 1
        _log.warning(
            "certfleet sandbox is a TEST DOUBLE of SSLMate APIv3, not SSLMate; data in %s",
            data_dir,
        )
        print(f"certfleet sandbox listening on {server.url} (TEST DOUBLE, not SSLMate)", flush=True)
        _serve(server)
        _log.info("certfleet sandbox stopped")
        return 0
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


def _open(args: argparse.Namespace, data_dir: Path) -> SandboxServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.seed_orders:
        made = bulk_create(
            data_dir,
            _seed_specs(Path(args.seed_orders)),
            unsafe_names=args.unsafe_names,
            skip_existing=True,
        )
        _log.info("seeded %s orders from %s", made, args.seed_orders)
    api = SandboxApi(
        OrderBook(data_dir),
        open_ca(data_dir),
        issue_delay=args.issue_delay,
        cert_lifetime=args.cert_lifetime,
        unsafe_names=args.unsafe_names,
    )
    return SandboxServer(
        args.port, api, args.api_key, FaultPlan(args.fault_rate, args.seed), args.latency
    )


def _serve(server: SandboxServer) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = (
        {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    )
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="sandbox-http",
        daemon=True,
    )
    thread.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        thread.join(timeout=10)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _seed_specs(path: Path) -> Iterator[OrderSpec]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DataDirError(str(path), f"unreadable: {err}") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            yield OrderSpec(
                cluster=item["cluster"],
                dns_names=tuple(item["dns_names"]),
                name=item.get("name"),
                approval=item.get("approval", "dns"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DataDirError(f"{path}:{number}", f"not a seed order line: {err}") from err


def _seconds(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30, 30s, 5m, 12h, 90d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1")
    return value
