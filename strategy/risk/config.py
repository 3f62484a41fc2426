"""Risk process settings (`[risk]`); the defaults here are the only ones.

    [risk]
    book_by = "strategy"          # a book is a strategy, an account, or an account/strategy pair
    on_breach = "reduce"          # the gateway's state on a breach: reduce (REDUCING) or halt
    [risk.limits]                 # every book's limits (a limit left out keeps its default)
    max_loss = 50000.0
    [risk.books.pairs]            # one book's own limits (replace the defaults for that book)
    max_loss = 5000.0
    [risk.var]
    days = 5
    [risk.flatten]
    max_display_share = 0.25
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gateway.config import GatewaySettings
from schemas.settings import Settings, StackSettings
from tickerplant.config import CurveSettings, EodSettings, HealthSettings, TickerplantSettings


class Limits(Settings):
    """A book's limits (None is off: from Python; in TOML give a value). Loss is the day's
    realized (after fees) plus unrealized PnL below -max_loss; VaR is the book's historical VaR (see [risk.var]); gross
    is sum |position x mid|, net is |sum position x mid|."""
    max_loss: float | None = Field(50_000.0, gt=0)
    max_var: float | None = Field(None, gt=0)
    max_gross: float | None = Field(5_000_000.0, gt=0)
    max_net: float | None = Field(2_000_000.0, gt=0)


class VarSettings(Settings):
    """Historical simulation. Scenarios: every `horizon_min`-minute simple return of each sym's
    mid on a 1-minute grid (the last two-sided quote of each minute, carried over minutes
    without one; overlapping windows within a day, none across days) over the last `days` HDB
    days before today, plus today's closed minutes (`include_today`). A book's scenario PnL is
    sum over syms of (position x mid now) x return; VaR is the `confidence` quantile of the
    loss, ES the mean loss at or beyond it. A sym without a return in a scenario (no quote
    yet, or no history) moves 0 there. Fewer than `min_scenarios`: VaR and ES are NaN."""
    days: int = Field(5, ge=1)
    horizon_min: int = Field(1, ge=1)
    confidence: float = Field(0.99, gt=0.5, lt=1)
    include_today: bool = True
    min_scenarios: int = Field(30, ge=2)


class FlattenSettings(Settings):
    """Orderly flattening of a breached book (only with on_breach = "reduce"): per sym, one IOC
    child at a time, `interval_s` apart, of at most `max_display_share` of the size displayed
    on the side it takes (bid size to sell, ask size to buy) and never more than the position,
    limit `through_bps` through the touch; the next child waits until the last one is done and
    its fills are in the book. Until flat, or the book is back within its limits."""
    enabled: bool = True
    interval_s: float = Field(1.5, gt=0)      # > the gateway's duplicate window (1 s by default)
    max_display_share: float = Field(0.25, gt=0, le=1)
    through_bps: float = Field(10.0, ge=0)


class RiskProcessSettings(Settings):
    ctl: str = "tcp://127.0.0.1:5050"        # ROUTER: status requests (tickstack positions|pnl|risk)
    feed_id: int = Field(11, ge=1, le=2**32 - 1)   # the feed id of its risk/risk_action rows
    client: str = "risk"                     # its client id at the gateway (tags carry a run id)
    book_by: Literal["strategy", "account", "account_strategy"] = "strategy"
    publish_s: float = Field(1.0, gt=0)      # risk rows every this long (and after every fill batch)
    on_breach: Literal["reduce", "halt"] = "reduce"
    action_retry_s: float = Field(2.0, gt=0)  # a state change not yet seen is asked again after this
    limits: Limits = Limits()
    books: dict[str, Limits] = {}
    var: VarSettings = VarSettings()
    flatten: FlattenSettings = FlattenSettings()

    @model_validator(mode="after")
    def _flatten_needs_reduce(self):
        if self.flatten.enabled and self.on_breach == "halt":
            raise ValueError("risk.flatten.enabled needs risk.on_breach = \"reduce\": HALTED admits only "
                             "cancels, so nothing could flatten (set flatten.enabled = false to halt)")
        return self

    def limits_of(self, book: str) -> Limits:
        return self.books.get(book, self.limits)


class RiskConfig(StackSettings):
    """What `python -m strategy.risk` reads: the TP's endpoints and day rule, the gateway's
    intents endpoint, and [risk]."""
    tickerplant: TickerplantSettings = TickerplantSettings()
    eod: EodSettings = EodSettings()
    gateway: GatewaySettings = GatewaySettings()
    risk: RiskProcessSettings = RiskProcessSettings()
    health: HealthSettings = HealthSettings()
    curve: CurveSettings = CurveSettings()
