"""The node: the composition root that wires config, stores, engine, reconciler and API together.

Start order matters to operators: the store must answer (else exit with a
store error), the API port must be free (else exit with a listen error), the
first reconcile must finish, and only then does the node report ready and
start claiming. Stop order is the reverse: stop claiming and hand unfinished
runs back (the engine's shutdown), stop watching, close the API, close stores.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from aiohttp import web

from .api.app import create_app
from .api.auth import ApiAuth
from .api.metrics import Metrics
from .api.services import ApiServices
from .config import NodeConfig
from .engine import Engine, EngineConfig
from .errors import SchedulerError
from .executors import Executor
from .logs import batch_lines
from .readiness import Readiness, ReadinessLimits
from .reconcile import Reconciler, ReloadReport
from .redact import redact_url
from .store import open_store
from .model import NodeInfo
from .store.base import Store
from . import __version__
from .watchdog import node_watchdog

log = logging.getLogger(__name__)


class ListenError(SchedulerError):
    """The API cannot listen on its address."""


def tune_gc_for_daemon() -> None:
    """Keep the garbage collector from pausing the loop for tens of milliseconds.

    A full collection scans every tracked object: with the runs in flight and
    everything imported, that is ~50-100 ms at a time, which shows as start
    lateness. Freezing what exists after start-up (modules, config, stores) takes
    it out of every later scan, and a larger first threshold makes collections rarer.
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def ensure_admin_token(path: Path) -> None:
    """Create the node's admin token file (mode 0600) unless it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        # Hexadecimal: a token starting with '-' would read as an option in `--token "$TOKEN"`.
        handle.write(secrets.token_hex(32) + "\n")
    log.info("created admin token file %s", path)


@dataclass
class _Parts:
    store: Store
    memory_store: Store
    engine: Engine
    reconciler: Reconciler | None
    runner: web.AppRunner
    metrics: Metrics


class Node:
    """One scheduler node: ``async with Node(config): ...`` or ``await node.serve()``."""

    def __init__(self, config: NodeConfig, executors: Mapping[str, Executor] | None = None) -> None:
        self.config = config
        self.executors = dict(executors or {})
        self._parts: _Parts | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._readiness_watch: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stopping = False

    @property
    def engine(self) -> Engine:
        assert self._parts is not None, "node not started"
        return self._parts.engine

    @property
    def store(self) -> Store:
        assert self._parts is not None, "node not started"
        return self._parts.store

    async def start(self) -> None:
        config = self.config
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the store and the admin token
        store = open_store(config.store_url)
        memory_store = open_store("sqlite:///:memory:")
        await store.start()
        await memory_store.start()
        tokens = list(config.tokens)
        if not tokens:
            ensure_admin_token(config.admin_token_path)
            tokens = [{"name": "admin", "tokenFile": str(config.admin_token_path), "roles": ["ADMINISTRATOR"]}]
        metrics = Metrics()
        engine = Engine(
            EngineConfig(
                node_id=config.node_id,
                executor_node=config.executor_node,
                lease_duration=config.lease_duration,
                poll_interval=config.poll_interval,
                max_concurrent_runs=config.max_concurrent_runs,
                shutdown_grace=config.shutdown_grace,
                retention=config.retention,
                keep_history=config.keep_history,
                listen=config.listen,
            ),
            [store, memory_store],
            executors=self.executors,
            listener=metrics,
        )
        def tasks_changed() -> None:
            engine.wake()  # a new or changed task may be due
            engine.check_leases()  # a removed one may be running here: stop it now

        reconciler = None
        if config.tasks_dir is not None:
            reconciler = Reconciler(
                config.tasks_dir, store, memory_store,
                node_id=config.node_id, executor_node=config.executor_node, node_timeout=config.node_timeout,
                on_change=tasks_changed, on_reload=lambda report: metrics.reload_finished(
                    report.ok, report.rejected, report.at
                ),
            )

        # A command must never outlive its lease, even with this node frozen: the
        # watchdog process holds their deadlines (scheduler/watchdog.py).
        watchdog = node_watchdog() if config.executor_node else None
        if watchdog is not None:
            watchdog.start()
        readiness = Readiness(
            config.node_id, store, engine, reconciler, ReadinessLimits.for_lease(config.lease_duration), watchdog
        )
        services = ApiServices(
            store=store,
            memory_store=memory_store,
            auth=ApiAuth.from_config(tokens),
            cors_origins=config.cors_origins,
            metrics_public=config.metrics_public,
            wake=engine.wake,
            check_leases=engine.check_leases,
            reload=(lambda: self.reload_json()) if reconciler else None,
            config_status=self.config_status,
            readiness=readiness.problems,
            metrics=metrics,
            node_timeout=config.node_timeout,
        )
        runner = web.AppRunner(create_app(services), access_log=None)
        await runner.setup()
        host, port = config.host_port
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            await memory_store.close()
            await store.close()
            raise ListenError(f"cannot listen on {config.listen}: {exc.strerror or exc}") from None
        self._parts = _Parts(store, memory_store, engine, reconciler, runner, metrics)
        log.info("node %s: store %s", config.node_id, redact_url(config.store_url))
        log.info("node %s: tasks directory %s", config.node_id, config.tasks_dir or "(none)")
        log.info("node %s: API on http://%s:%d", config.node_id, host, port)
        if not config.tokens:
            log.info("node %s: admin token in %s", config.node_id, config.admin_token_path)
        if reconciler is not None:
            watch = reconciler.open_watch()  # before the first reload: a change made during it is seen
            try:
                await self._announce(store)  # live before it declares anything (see Store.withdraw_specs)
                await reconciler.reload()
            except BaseException:
                watch.close()
                raise
            self._watcher = asyncio.create_task(reconciler.watch(watch), name="watch tasks.d")
        if watchdog is not None and not await watchdog.until_running(timeout=10):
            log.error("node %s: the watchdog did not start within 10s; the node is not ready until it does",
                      config.node_id)
        await engine.start()
        log.info("node %s ready (%s)", config.node_id, "executor" if config.executor_node else "no executor")
        self._readiness_watch = asyncio.create_task(readiness.watch(config.poll_interval), name="readiness")

    async def _announce(self, store: Store) -> None:
        """A first heartbeat, before the engine's: the node's declarations count from its first reload."""
        now = store.now()
        await store.heartbeat(NodeInfo(
            node_id=self.config.node_id, executor=self.config.executor_node, heartbeat=now, started_at=now,
            version=__version__, listen=self.config.listen,
        ))

    async def stop(self) -> None:
        parts = self._parts
        if parts is None or self._stopping:
            return
        self._stopping = True
        if self._readiness_watch is not None:
            self._readiness_watch.cancel()
            await asyncio.gather(self._readiness_watch, return_exceptions=True)
        await parts.engine.stop()  # the parts stay reachable meanwhile: a second signal cuts the grace short
        self._parts = None
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await parts.runner.cleanup()
        await parts.memory_store.close()
        await parts.store.close()
        self._stopping = False
        log.info("node %s stopped", self.config.node_id)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def reload(self) -> ReloadReport | None:
        if self._parts is None or self._parts.reconciler is None:
            return None
        return await self._parts.reconciler.reload(full=True)  # an operator's reload also restores what went missing

    async def reload_json(self) -> dict:
        report = await self.reload()
        return report.to_dict() if report else {}

    async def config_status(self) -> dict:
        reconciler = self._parts.reconciler if self._parts else None
        report = reconciler.last_report if reconciler else None
        files, divergence = await reconciler.current_files() if reconciler else ((), [])
        return {
            "tasksDir": str(self.config.tasks_dir) if self.config.tasks_dir else None,
            "lastReload": report.to_dict() if report else None,
            "files": [f.to_dict() for f in files],  # checked against the store now
            "divergence": divergence,
        }

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP rescans the tasks directory.

        The first SIGTERM or SIGINT stops the node gracefully (running runs get
        ``shutdownGrace``); a second one hands the running runs back at once.
        """
        loop = asyncio.get_running_loop()
        with self._signal_handlers(loop), batch_lines(loop):
            try:
                await self.start()
                tune_gc_for_daemon()
                await self._stopped.wait()
            finally:
                await self.stop()

    @contextmanager
    def _signal_handlers(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        # Handlers first: /readyz answers during start(), and a SIGHUP sent as soon as it
        # does must rescan, not kill the process (SIGHUP's default action).
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload_on_signal()))
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _on_stop_signal(self, name: str) -> None:
        if not self._stopped.is_set():
            self._stopped.set()
            running = self._parts.engine.running_count if self._parts else 0
            grace = self.config.shutdown_grace.total_seconds()
            log.warning(
                "node %s stopping on %s: %d running run(s) get up to %.0fs to finish; "
                "send %s again to hand them back now", self.config.node_id, name, running, grace, name,
            )
        elif self._parts is not None:
            log.warning("node %s: %s again, handing running runs back now", self.config.node_id, name)
            self._parts.engine.give_up_grace()

    async def _reload_on_signal(self) -> None:
        report = await self.reload()
        if report is not None:
            log.info(
                "reload on SIGHUP: %d created, %d updated, %d removed, %d file(s) rejected",
                report.created, report.updated, report.removed, report.rejected,
            )

