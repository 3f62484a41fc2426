"""The real-time database (kdb-tick's r.q): subscribe, recover today from the log, keep it in
memory, answer read-only SQL over it, and at end of day hand the day to the HDB and clear.

Recovery is the subscriber's own guarantee: on start it replays today's log up to the
handshake seq, then goes live, so a restarted RDB holds every message exactly once.
The query endpoint (hdb/server.py, ROUTER + worker threads) runs beside the ingest loop;
DuckDB releases the GIL while it scans, and each query sees a snapshot of the tables.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from rdb.store import Store
from tickerplant.clock import Clock
from tickerplant.subscriber import Subscriber, Update

log = logging.getLogger("rdb")


class Rdb:
    def __init__(self, cfg, registry=None, serve: bool = True):
        self.cfg = cfg
        self.registry = registry or cfg.registry()
        self.store = Store(self.registry, cfg.rdb.tables or None, cfg.rdb.chunk_rows)
        self.sub = Subscriber(cfg, cfg.rdb.tables or None, registry=self.registry)
        self.server = None
        if serve:
            from hdb.server import QueryServer
            from hdb.sql import Engine
            clock = Clock(cfg.eod.time, cfg.eod.tz)
            self.server = QueryServer(cfg.rdb.query, Engine(
                today=self.store.snapshot, day=lambda: self.sub.day or clock.day(),
                timeout_s=cfg.rdb.query_timeout_s, max_rows=cfg.rdb.max_rows, registry=self.registry))
        self.days_saved: list[dt.date] = []

    def upd(self, ev: Update) -> None:
        cols, n = ev.columns()
        if cols is None:
            self.store.append(ev.table, ev.batch)
        else:
            self.store.append_columns(ev.table, cols, n)

    def end(self, day: dt.date) -> None:
        from hdb.eod import save_day
        t0 = time.perf_counter()
        rows = save_day(self.cfg.hdb_dir, day, self.store.snapshot(), self.registry)
        self._questdb(day)
        self.store.clear()
        self.days_saved.append(day)
        log.info("end of day %s: saved %s in %.1fs", day, rows, time.perf_counter() - t0)

    def _questdb(self, day: dt.date) -> None:
        """The optional second sink: a failure is reported, never costs the Parquet day."""
        if not self.cfg.hdb.questdb.enabled:
            return
        try:
            from hdb.questdb import sink_day
            sink_day(self.cfg.hdb.questdb, day, self.store.snapshot(), self.registry)
        except Exception as e:  # noqa: BLE001 - the sink must never stop EOD
            log.error("QuestDB sink failed for %s (Parquet day is saved): %s", day, e)

    def run(self) -> None:
        if self.server:
            self.server.start()
        try:
            for ev in self.sub:
                if isinstance(ev, Update):
                    self.upd(ev)
                else:
                    self.end(ev.date)
        finally:
            if self.server:
                self.server.stop()

    def stop(self) -> None:
        self.sub.close()
