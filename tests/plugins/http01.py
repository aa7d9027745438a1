"""HAProxy and Apache httpd answering HTTP-01 statelessly with the snippets of docs/acme.md.

Each runs as an unprivileged user process on 127.0.0.1 with its whole configuration in a
temporary directory: the docs' snippet for a thumbprint, placed where the docs say (the
``frontend`` that binds the port; the port's ``VirtualHost``), and everything else
answered 404, as ``Http01Nginx`` (tests/plugins/pebble.py) does for nginx.

No fixtures: ``Http01Haproxy(binary, directory, port, snippet)`` and
``Http01Apache(binary, directory, port, snippet)`` start the server and wait (bounded)
until it listens; the caller stops it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from tests.plugins.binaries import missing
from tests.plugins.pebble import Http01Server, wait_listening

APACHE_MODULES = Path("/usr/lib/apache2/modules")
# mod_mpm_event: the process model; mod_authz_core: access control every config needs;
# mod_rewrite and mod_headers: what the docs' snippet uses.
APACHE_MODULE_FILES = {
    "mpm_event_module": "mod_mpm_event.so",
    "authz_core_module": "mod_authz_core.so",
    "rewrite_module": "mod_rewrite.so",
    "headers_module": "mod_headers.so",
}


def haproxy_config(port: int, snippet: str) -> str:
    """An haproxy.cfg with the snippet in the frontend that binds 127.0.0.1:``port``."""
    return f"""global
  log stderr format short local0 warning
defaults
  mode http
  log global
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend http01
  bind 127.0.0.1:{port}
{snippet}
  http-request return status 404
"""


class Http01Haproxy(Http01Server):
    """``haproxy -f cfg -db`` (foreground, no daemon) answering HTTP-01 with ``snippet``."""

    def __init__(self, binary: str, directory: Path, port: int, snippet: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        config = directory / "haproxy.cfg"
        config.write_text(haproxy_config(port, snippet))
        log = directory / "haproxy.log"
        checked = subprocess.run(
            [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [binary, "-f", str(config), "-db"], stdout=out, stderr=subprocess.STDOUT
            )
        wait_listening(port, self.process, log)


def apache_modules() -> str:
    """The ``LoadModule`` lines for Debian's module directory (a skip when absent)."""
    lines = []
    for name, file in APACHE_MODULE_FILES.items():
        if not (APACHE_MODULES / file).exists():
            missing(f"Apache's {file} is not in {APACHE_MODULES}")
        lines.append(f"LoadModule {name} {APACHE_MODULES / file}")
    return "\n".join(lines)


def apache_config(directory: Path, docroot: Path, port: int, snippet: str) -> str:
    """An httpd.conf of its own (ServerRoot, PidFile, ErrorLog, mutexes in ``directory``)
    with the snippet in the VirtualHost of 127.0.0.1:``port``, whose DocumentRoot
    ``docroot`` is empty (any other path: 404)."""
    # as root, httpd switches to an unprivileged user for the requests
    user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
    return f"""ServerRoot "{directory}"
{apache_modules()}
DefaultRuntimeDir "{directory}"
PidFile "{directory}/httpd.pid"
ErrorLog "{directory}/error.log"
LogLevel warn
Mutex file:{directory} default
ServerName localhost
{user}Listen 127.0.0.1:{port}
<Directory />
    AllowOverride None
</Directory>
<VirtualHost 127.0.0.1:{port}>
    DocumentRoot "{docroot}"
{snippet}
</VirtualHost>
"""


class Http01Apache(Http01Server):
    """``apache2 -X`` (one process, foreground) answering HTTP-01 with ``snippet``."""

    def __init__(self, binary: str, directory: Path, port: int, snippet: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        # the request user (nobody when run as root) must reach the DocumentRoot, and
        # pytest's temporary directories are private to their owner
        self.docroot = Path(tempfile.mkdtemp(prefix="certfleet-http01-"))
        self.docroot.chmod(0o755)
        config = directory / "httpd.conf"
        config.write_text(apache_config(directory, self.docroot, port, snippet))
        argv = [binary, "-f", str(config), "-d", str(directory)]
        try:
            checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            with (directory / "stderr.log").open("wb") as out:
                self.process = subprocess.Popen([*argv, "-X"], stdout=out, stderr=subprocess.STDOUT)
            wait_listening(port, self.process, directory / "stderr.log")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if hasattr(self, "process"):
            super().stop()
        self.docroot.rmdir()
