"""The long-running agent: the poll loop in a worker thread, signals in the main thread.

- SIGTERM and SIGINT: the current step (a poll, a command) finishes, then the process exits
  0. Every sleep is an ``Event.wait``, so an idle daemon stops at once; the stop event also
  cancels a store request in flight (the store is opened with it), so a poll of a hung
  store ends within a second, its remaining store requests failing at once.
- SIGHUP: the config file is read again before the next poll, which starts at once. A
  config that does not load (or whose store or state directory cannot be opened), or one
  with a cluster secret that opens nothing in the store (``node_agent.secretproof``), is
  reported (log and ``--status``) and the running one kept. The same proof runs at start,
  where a failure is a config error (exit status 2). A reload that loads ends every
  backoff (the versions that failed their check_command or probe are tried again at once:
  the operator may have fixed the cause); a restart keeps them.
- ``ready`` (``--readyfd``) is called once, after the first poll has finished or failed.

Signal handlers only set events. They run in the main thread, which does nothing but wait
for the worker: a handler never interrupts code that holds one of those events' locks
(``Event.set`` from a handler that interrupted ``Event.wait`` in the same thread can
deadlock).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from types import FrameType
from typing import Callable

from certfleet.config import AgentConfig, ConfigError, load_agent_config
from certfleet.errors import CertfleetError
from node_agent.agent import Agent
from node_agent.loop import Schedule, run_loop
from node_agent.result import PollResult
from node_agent.secretproof import SecretProof, log_proof, prove_secrets

log = logging.getLogger(__name__)

_JOIN_STEP = 1.0


class Daemon:
    """One agent process: its config file, its current ``Agent``, and the loop's events."""

    def __init__(
        self,
        config_path: str,
        config: AgentConfig,
        *,
        ready: Callable[[], None] | None = None,
        make_agent: Callable[[AgentConfig], Agent] | None = None,
        prove: Callable[[AgentConfig, Agent], SecretProof] | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.prove = prove or (lambda config, agent: prove_secrets(config, agent.store))
        self.stop = threading.Event()
        self.make_agent = make_agent or self._agent
        self.agent = self.make_agent(config)
        self.wake = threading.Event()
        self.reload_wanted = threading.Event()
        self._ready = ready

    def _agent(self, config: AgentConfig) -> Agent:
        """An agent whose store requests end as soon as a stop is requested."""
        return Agent(config, stop=self.stop)

    # -- requests (signal handlers call these) ---------------------------------------------

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def request_reload(self) -> None:
        self.reload_wanted.set()
        self.wake.set()

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping after the current step", signum)
            self.request_stop()

        def reload(signum: int, frame: FrameType | None) -> None:
            log.info("SIGHUP: reading %s again before the next poll", self.config_path)
            self.request_reload()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    # -- the loop ------------------------------------------------------------------------------

    def wait(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        """The next sleep, under the current config's poll interval (follows reloads)."""
        return Schedule(self.config.poll_interval).wait(failures, rng)

    def poll(self) -> PollResult:
        if self.reload_wanted.is_set():
            self.reload_wanted.clear()
            self.reload()
        return self.agent.poll_once()

    def reload(self) -> bool:
        """Read the config file again; keep the running config if it fails. True if loaded."""
        try:
            config = load_agent_config(self.config_path)
            agent = self.make_agent(config)
        except ConfigError as err:
            log.error("config reload failed, keeping the running config:")
            for line in str(err).splitlines():  # one log line each (messages are escaped)
                log.error("  %s", line)
            return False
        except CertfleetError as err:
            log.error("config reload failed, keeping the running config: %s", err)
            return False
        for notice in config.notices:
            log.warning("notice: %s", notice)
        proof = self.prove(config, agent)
        log_proof(proof)
        if not proof.ok:
            message = "; ".join(proof.errors)
            log.error("config reload refused, keeping the running config: %s", message)
            self.agent.health.config_error = f"reload refused, running config kept: {message}"
            return False
        agent.clear_backoff()
        agent.health.config_error = ""
        self.config, self.agent = config, agent
        log.info("config reloaded from %s", self.config_path)
        return True

    def prove_start(self) -> bool:
        """Prove the starting config's secrets; False (recorded for ``--status``) if one
        opens nothing: the caller exits with a config error."""
        proof = self.prove(self.config, self.agent)
        log_proof(proof)
        health = self.agent.health
        health.config_error = "; ".join(proof.errors)
        if proof.ok:
            return True
        health.config_error = f"not started: {health.config_error}"
        self.agent.health_store.save(health)
        return False

    def _signal_ready(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None:
            ready()

    def loop(self) -> int:
        """Run the poll loop in this thread until ``stop``; return the number of polls."""
        return run_loop(self.poll, self, self.stop, wake=self.wake, after_poll=self._signal_ready)

    def run(self) -> bool:
        """Run the loop in a worker thread; the calling (main) thread handles signals.

        True when the loop ended because a stop was requested, False if it died."""
        log.info(
            "certfleet-agent polling %s every %.0f s (node id %s)",
            self.agent.store.url,
            self.config.poll_interval,
            self.agent.node_id,
        )
        worker = threading.Thread(target=self.loop, name="certfleet-agent-poll")
        worker.start()
        while worker.is_alive():
            worker.join(_JOIN_STEP)
        if not self.stop.is_set():
            log.error("the poll loop ended unexpectedly")
            return False
        log.info("certfleet-agent stopped")
        return True
