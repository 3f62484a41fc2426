"""A strategy as a stack process: `python -m strategy --name pairs [--param k=v ...]`
(`tickstack strategy start pairs`; `tickstack start` runs the names in `[strategy] run`).

    StrategyProcess.from_config(cfg, "pairs").run()     # until stop() (SIGTERM)

It runs `strategy.live.run`: the TP subscription of the strategy's tables and syms (the day so
far from the TP's log, then live) and its orders through the gateway (`GatewayPort` over an
`OrderClient` DEALER on `[gateway] intents`). Parameters: `[strategy.params.NAME]`, then
`--param` on top. For a strategy that takes `sim` (pairs) the stack's simulator settings
(`[feed] syms, seed`) are passed, so on a fresh home (no history) it trades the simulator's
designed pairs (see strategy.examples.pairs).

Client id. The gateway keys idempotency by (client, tag) for the whole trading day and the
strategy numbers its tags from 1 in every run, so each run is its own client,
"<name>@<run id>" (run id: the start time in ms, base 36): a restarted strategy's "pairs-1" is
a new order, never the previous run's. Order rows carry the strategy's name in `strategy`.

Ready: once subscribed (the TP handshake done, so nothing published after is missed) it
writes its pid to `<home>/run/strategy-NAME.ready`, removed at exit; `tickstack start` waits
for that file. Stop: SIGTERM ends the loop; the strategy's `on_stop` runs (pairs flattens) and
its last orders are followed for `[strategy] stop_timeout_s` before the process exits.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from feedhandlers.config import FeedSettings
from gateway.config import GatewaySettings
from schemas.settings import StackSettings
from strategy.config import StrategySettings
from strategy.names import strategy_class
from tickerplant.config import CurveSettings, HealthSettings, TickerplantSettings

log = logging.getLogger("strategy")


class StrategyConfig(StackSettings):
    """What `python -m strategy` reads: the TP's endpoints, the gateway's intents endpoint,
    the simulator's settings (pairs on a fresh home) and `[strategy]`."""
    tickerplant: TickerplantSettings = TickerplantSettings()
    gateway: GatewaySettings = GatewaySettings()
    feed: FeedSettings = FeedSettings()
    strategy: StrategySettings = StrategySettings()
    health: HealthSettings = HealthSettings()
    curve: CurveSettings = CurveSettings()


def ready_file(run_dir: Path, spec: str) -> Path:
    return Path(run_dir) / f"strategy-{spec}.ready"


class StrategyProcess:
    def __init__(self, spec: str, tp: TickerplantSettings, intents: str, settings: StrategySettings,
                 hdb_dir: Path | None = None, run_dir: Path | None = None, sim: tuple | None = None,
                 params: dict | None = None, curve: CurveSettings | None = None):
        self.spec, self.tp, self.intents, self.settings = spec, tp, intents, settings
        self.curve = curve or CurveSettings()        # [curve]: the TP's and the gateway's clients
        self.hdb_dir, self.run_dir, self.sim = hdb_dir, run_dir, sim
        cls = strategy_class(spec)                   # ValueError: unknown name
        merged = {**settings.params.get(spec, {}), **(params or {})}
        if sim is not None and hasattr(cls, "sim") and "sim" not in merged:
            merged["sim"] = list(sim)
        self.strategy = cls(**merged)                # StrategyError: unknown parameter
        self.run_id = np.base_repr(time.time_ns() // 1_000_000, 36).lower()
        self.client_id = f"{self.strategy.name}@{self.run_id}"
        self._stop = False
        self.runtime = None
        self.port = None
        self.sub = None

    @classmethod
    def from_config(cls, cfg, spec: str, params: dict | None = None) -> "StrategyProcess":
        return cls(spec, cfg.tickerplant, cfg.gateway.intents, cfg.strategy, cfg.hdb_dir, cfg.run_dir,
                   (cfg.feed.syms, cfg.feed.seed), params, getattr(cfg, "curve", None))

    def health(self) -> dict:
        """The health hook (tickerplant/health.py), read from another thread: in = messages of
        its subscription, out = intents sent to the gateway, errors = intents not sent
        (gateway down, stale data, refused); lag of the subscription."""
        from tickerplant.health import subscriber_health
        h = subscriber_health(self.sub)
        c = self.port.counts if self.port is not None else {}
        unsent = ("stale_data", "gateway_down", "bad_request")
        h["msgs_out"] = sum(v for k, v in list(c.items()) if k not in unsent)
        h["errors"] += sum(c.get(k, 0) for k in unsent)
        return h

    def stop(self) -> None:
        """End the run (safe from a signal handler): on_stop, follow the last orders, exit."""
        self._stop = True

    def _ready(self) -> None:
        log.info("%s: subscribed to %s (syms %s); orders to %s as client %s", self.spec,
                 self.tp.pub, self.strategy.syms or "all", self.intents, self.client_id)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ready_file(self.run_dir, self.spec).write_text(str(os.getpid()))

    def run(self) -> None:
        from gateway.client import OrderClient
        from strategy import live
        s = self.settings
        client = OrderClient(self.intents, client=self.client_id, curve=self.curve)
        self.port = live.GatewayPort(client, s.max_decision_age_s)
        self.sub = live.subscription(self.strategy, self.tp, self.curve)
        try:
            self.runtime = live.run(self.strategy, self.tp, self.port, mode=s.mode, hdb_dir=self.hdb_dir,
                                    stop=lambda: self._stop, poll_s=s.poll_s, subscriber=self.sub,
                                    stop_timeout_s=s.stop_timeout_s, on_ready=self._ready,
                                    curve=self.curve)
        finally:
            client.close()
            if self.run_dir is not None:
                ready_file(self.run_dir, self.spec).unlink(missing_ok=True)
        st = self.strategy
        log.info("%s: stopped; %d orders, positions %s, counters %s, sent %s", self.spec, len(st.orders),
                 {k: v for k, v in st.positions.items() if v}, self.runtime.counters, dict(self.port.counts))
