"""Backtest settings (`[backtest]`); the defaults here are the only ones.

The venues and the pre-trade limits default to the stack's own (gateway.config's
DEFAULT_VENUES, gateway.risk.RiskSettings), so a backtest fills and denies as the default
stack's gateway would; give `[backtest.venues.X]` / `[backtest.risk]` to model others.
"""
from __future__ import annotations

from typing import Literal

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
