"""A trading stack for the gateway's and the CLI's tests: a real tickerplant process, venues (in process:
quickfix acceptors with their matching engines, fed by the TP's quotes) and a gateway (in
process: its quickfix initiator logs on to them over loopback), driven by OrderClient, the
public API. Everything is stopped by the fixture, also when a test fails."""
from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np

from helpers import Procs, start_tp, wait_for, write_config


class Trading:
    """cfg, procs (the TP), venues {name: Venue}, gw (Gateway), client (OrderClient), and a
    quote feed. `quote()` publishes through the TP and waits until the gateway and every venue
    saw it."""

    def __init__(self, home: Path, in_process_venues=("A", "B"), client: str = "test", **sections):
        from feedhandlers.base import Feed
        from gateway.venue import Venue, subscribe_quotes
        from ops.config import load
        self.home = home
        path = write_config(home, **sections)
        self.cfg = cfg = load(path, home)
        self.procs = Procs(path, home)
        self.venues, self._stops, self.gw, self.client, self.feed = {}, [], None, None, None
        self.clients = []
        try:
            start_tp(cfg, self.procs)
            self.feed = Feed(cfg.tickerplant, 99, cfg.registry(), batch_ms=0)
            for name in in_process_venues:
                v = Venue(cfg.venues[name], home / "fix" / f"venue-{name}").start()
                self.venues[name] = v
                self._stops.append(subscribe_quotes(v, cfg.tickerplant))
            self.start_gateway()
            self.client = self.connect(client)
        except BaseException:
            self.close()
            raise

    def start_gateway(self):
        from gateway.gateway import Gateway
        self.gw = Gateway.from_config(self.cfg).start()
        wait_for(lambda: not self.gw.recovering, timeout=20, what="the gateway to catch up with its venues")
        return self.gw

    def connect(self, client: str | None = None, **kw):
        from gateway.client import OrderClient
        c = OrderClient(self.cfg.gateway.intents, client=client, **kw)
        self.clients.append(c)
        return c

    def quote(self, sym, bid, ask, bsize=1000, asize=1000, venues=None):
        self.feed.publish("quote", {"time": np.array([time.time_ns()]), "sym": np.array([sym]),
                                    "bid": np.array([float(bid)]), "ask": np.array([float(ask)]),
                                    "bsize": np.array([bsize]), "asize": np.array([asize])})
        want = (float(bid), float(ask), bsize, asize)
        wait_for(lambda: self.gw.view.market(sym) == want, timeout=10, what=f"the gateway to see {sym}'s quote")
        for name in venues or self.venues:
            eng = self.venues[name].engine
            wait_for(lambda: (q := eng.quote(sym)) is not None and q["ask_size"] == int(
                asize * self.venues[name].settings.display_fraction), timeout=10,
                what=f"venue {name} to see {sym}'s quote")

    def rows(self, table: str) -> list[dict]:
        """The gateway's published rows of `table` in the TP's log, in log order."""
        from tickerplant.protocol import control
        from tickerplant.log import scan
        from schemas.codec import decode
        path = control(self.cfg.tickerplant.ctl, "status")["log"]
        out = []
        for _, head, payload in scan(path, (table,), strict=False):
            if head.feed == self.cfg.gateway.feed_id:
                b = decode(payload, self.cfg.registry())[1]
                out += b.to_pylist()
        return out

    def published(self, table: str, pred, timeout: float = 10.0) -> list[dict]:
        """Wait until a published row of `table` matches `pred`; all the matching ones."""
        return wait_for(lambda: [r for r in self.rows(table) if pred(r)], timeout=timeout,
                        what=f"a matching {table} row in the TP log")

    def close(self):
        for c in self.clients:
            c.close()
        if self.gw is not None:
            self.gw.stop()
        for stop in self._stops:
            stop()
        for v in (self.venues or {}).values():
            v.stop()
        if self.feed is not None:
            self.feed.close(2)
        self.procs.stop_all()
        self.gw = self.venues = None
        # free quickfix's C++ objects now, in this process: left to a later garbage collection
        # they could be destroyed in a forked child (multiprocessing) and crash it
        gc.collect()


def events_until(client, *preds, timeout: float = 10.0) -> list[dict]:
    """Collect the client's events until each of `preds` has matched one, in whatever order
    they come (two venues answer in either order); all collected, in order. Events that came
    in the same read after the last match stay unread for the next call."""
    got, left = [], list(preds)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        evs = client.events(0.05)
        for i, ev in enumerate(evs):
            got.append(ev)
            left = [p for p in left if not p(ev)]
            if not left:
                client._unread.extendleft(reversed(evs[i + 1:]))
                return got
    raise AssertionError(f"no matching event within {timeout}s; got {got}")
