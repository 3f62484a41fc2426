"""The HDB process as a library: read-only SQL over the Parquet history on its query endpoint.

The engine's views glob `<hdb>/<table>/date=*/*.parquet` at every query, so a day written by
EOD (or a backfill) is visible to the next query without a restart, and a partition replaced
atomically is read either whole-old or whole-new.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from hdb.config import HdbConfig, HdbSettings
from hdb.server import QueryServer
from hdb.sql import Engine
from schemas.registry import Registry
from tickerplant.config import CurveSettings

log = logging.getLogger(__name__)


class Hdb:
    def __init__(self, settings: HdbSettings, hdb_dir: Path, registry: Registry,
                 curve: CurveSettings | None = None):
        self.hdb_dir = Path(hdb_dir)
        self.hdb_dir.mkdir(parents=True, exist_ok=True)
        self.engine = Engine(hdb_dir=self.hdb_dir, timeout_s=settings.query_timeout_s,
                             max_rows=settings.max_rows, registry=registry)
        self.server = QueryServer(settings.query, self.engine, workers=settings.workers,
                                  max_request_bytes=settings.max_request_bytes, curve=curve)
        self._stop = threading.Event()

    @classmethod
    def from_config(cls, cfg: HdbConfig) -> "Hdb":
        return cls(cfg.hdb, cfg.hdb_dir, cfg.registry(), cfg.curve)

    def start(self) -> "Hdb":
        self.server.start()
        log.info("hdb: serving %s on %s", self.hdb_dir, self.server.endpoint)
        return self

    def health(self) -> dict:
        """The health hook (tickerplant/health.py): queries in, replies out, failed queries."""
        return self.server.health()

    def stop(self) -> None:
        """Ask run() to finish (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Serve until stop(); then close the sockets and the engine."""
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.server.stop()
            self.engine.close()
            log.info("hdb: stopped (%s)", self.server.counters())
