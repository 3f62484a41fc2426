"""Backtest settings (`[backtest]`) and live strategy settings (`[strategy]`); the defaults
here are the only ones.

The venues and the pre-trade limits default to the stack's own (gateway.config's
DEFAULT_VENUES, gateway.risk.RiskSettings), so a backtest fills and denies as the default
stack's gateway would; give `[backtest.venues.X]` / `[backtest.risk]` to model others.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gateway.config import Venues
from gateway.risk import RiskSettings
from schemas.settings import Settings


class BacktestSettings(Settings):
    venues: Venues
    risk: RiskSettings = RiskSettings()
    mode: Literal["auto", "event", "batch"] = "auto"   # auto: batch when the strategy has batch callbacks
    chunk_rows: int = Field(65_536, ge=1)             # rows read and handed on at a time
    pnl_interval_s: float = Field(60.0, gt=0)         # the PnL curve's grid, in data time
    markouts_s: tuple[float, ...] = (1.0, 10.0, 60.0)
    trading_days: int = Field(252, gt=0)              # Sharpe's year: this many sessions ...
    session_hours: float = Field(6.5, gt=0)           # ... of this many hours


class StrategySettings(Settings):
    """Live strategies (`[strategy]`): which ones `tickstack start` runs after the gateway, and
    their parameters, e.g.
        [strategy]
        run = ["pairs"]
        [strategy.params.pairs]
        entry_z = 2.5
    A name is a known one (`pairs`) or module:Class; parameters are the strategy class's own
    attributes (an unknown one stops the process with a clear error)."""
    run: tuple[str, ...] = ("pairs",)
    params: dict[str, dict[str, Any]] = {}
    mode: Literal["auto", "event", "batch"] = "auto"
    poll_s: float = Field(0.05, gt=0)             # wait this long for data or order events per loop
    stop_timeout_s: float = Field(5.0, ge=0)      # at stop: follow the last orders this long
    # new orders decided on data older than this (data time vs the wall clock) are not sent:
    # a strategy started mid-day replays the day so far from the TP's log first
    max_decision_age_s: float | None = Field(5.0, gt=0)
