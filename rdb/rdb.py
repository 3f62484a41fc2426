"""The real-time database (kdb-tick's r.q): subscribe, recover today from the log, keep it in
memory, answer read-only SQL over it, and at end of day hand the day to the HDB and clear.

Recovery is the subscriber's own guarantee: on start it replays today's log up to the
handshake seq, then goes live, so a restarted RDB holds every message exactly once. It takes
the subscriber's batches: one append per table per poll, whatever the messages in it.
The query endpoint (hdb/server.py, ROUTER + worker threads) runs beside the ingest loop;
DuckDB releases the GIL while it scans, and each query sees a snapshot of the tables.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

from hdb.config import QuestDBSettings
from rdb.config import RdbConfig, RdbSettings
from rdb.store import Store
from schemas.registry import Registry
from tickerplant.clock import Clock
from tickerplant.config import CurveSettings, EodSettings, TickerplantSettings
from tickerplant.health import subscriber_health
from tickerplant.subscriber import Batch, Subscriber, Update

log = logging.getLogger("rdb")
BIG_MESSAGE = 64 << 10   # bytes: messages at least this big are appended one by one


def append_batch(store: Store, b: Batch) -> None:
    """A subscriber batch into the store: small messages in one append of their concatenation,
    big ones (>= BIG_MESSAGE bytes on average) one append each, straight from the message (the
    store copies rows anyway: one copy, not two).
    (When rdb/store.py gains an append of many messages at once, this loop goes there.)"""
    if len(b.seqs) > 1 and b.nbytes >= len(b.seqs) * BIG_MESSAGE:
        for cols, n in b.parts():
            store.append_columns(b.table, cols, n)
        return
    cols, n = b.columns()
    store.append_columns(b.table, cols, n)


class Rdb:
    def __init__(self, settings: RdbSettings, tp: TickerplantSettings, eod: EodSettings,
                 hdb_dir: Path, registry: Registry, questdb: QuestDBSettings | None = None,
                 serve: bool = True, curve: CurveSettings | None = None):
        self.registry = registry
        self.hdb_dir = Path(hdb_dir)
        self.questdb = questdb
        self.store = Store(registry, settings.tables or None, settings.chunk_rows)
        self.sub = Subscriber(tp, settings.tables or None, registry=registry, curve=curve or CurveSettings())
        self.server = None
        if serve:
            from hdb.server import QueryServer
            from hdb.sql import Engine
            clock = Clock(eod.time, eod.tz)
            self.server = QueryServer(settings.query, Engine(
                today=self.store.snapshot, day=lambda: self.sub.day or clock.day(),
                timeout_s=settings.query_timeout_s, max_rows=settings.max_rows, registry=registry),
                max_request_bytes=settings.max_request_bytes, curve=curve)
        self.days_saved: list[dt.date] = []

    @classmethod
    def from_config(cls, cfg: RdbConfig, serve: bool = True) -> "Rdb":
        return cls(cfg.rdb, cfg.tickerplant, cfg.eod, cfg.hdb_dir, cfg.registry(), cfg.hdb.questdb, serve,
                   cfg.curve)

    def upd(self, ev: Update) -> None:
        """One message (the per-message API; `run` takes whole batches)."""
        cols, n = ev.columns()
        if cols is None:
            self.store.append(ev.table, ev.batch)
        else:
            self.store.append_columns(ev.table, cols, n)

    def upd_batch(self, b: Batch) -> None:
        """Every message of one table from one poll (or a stretch of the log): see append_batch."""
        append_batch(self.store, b)

    def end(self, day: dt.date) -> None:
        from hdb.eod import save_day
        t0 = time.perf_counter()
        rows = save_day(self.hdb_dir, day, self.store.snapshot(), self.registry)
        self._questdb(day)
        self.store.clear()
        self.days_saved.append(day)
        log.info("end of day %s: saved %s in %.1fs", day, rows, time.perf_counter() - t0)

    def _questdb(self, day: dt.date) -> None:
        """The optional second sink: a failure is reported, never costs the Parquet day."""
        if self.questdb is None or not self.questdb.enabled:
            return
        try:
            from hdb.questdb import sink_day
            sink_day(self.questdb, day, self.store.snapshot(), self.registry)
        except Exception as e:  # noqa: BLE001 - the sink must never stop EOD
            log.error("QuestDB sink failed for %s (Parquet day is saved): %s", day, e)

    def run(self) -> None:
        if self.server:
            self.server.start()
        try:
            for ev in self.sub.batches():
                if isinstance(ev, Batch):
                    self.upd_batch(ev)
                else:
                    self.end(ev.date)
        finally:
            if self.server:
                self.server.stop()

    def stop(self) -> None:
        self.sub.close()

    def health(self) -> dict:
        """The health hook (tickerplant/health.py): in = messages from the TP (live and from
        its log), out = queries answered, lag from the subscription; rows held as `rows`."""
        h = subscriber_health(self.sub)
        if self.server is not None:
            q = self.server.health()
            h.update(msgs_out=q["msgs_out"], errors=h["errors"] + q["errors"], last_error=q["last_error"])
        h["extra"] = {"rows": sum(self.store.counts().values())}
        return h
