"""Venue and gateway settings; the defaults here are the only ones.

    [gateway]                      # GatewaySettings
    intents = "tcp://127.0.0.1:5040"
    [gateway.risk]                 # gateway.risk.RiskSettings
    max_order_qty = 5000
    [gateway.risk.syms.AAPL]       # per-sym overrides
    max_order_qty = 500
    [venues.A]                     # VenueSettings, one table per venue
    port = 5301
"""
from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from gateway.matching import FillModel
from gateway.risk import RiskSettings
from schemas.settings import Settings, StackSettings
from tickerplant.config import CurveSettings, EodSettings, HealthSettings, TickerplantSettings

_COMP_ID = r"^[A-Za-z0-9_.-]+$"


class VenueSettings(Settings):
    """One simulated venue: its FIX endpoint and how it fills against the market's quotes.
    The venue is the FIX acceptor; HeartBtInt is chosen by each initiator at logon."""
    name: str = Field("A", pattern=r"^[A-Za-z0-9_]+$")
    port: int = Field(5301, ge=1, le=65535)     # FIX acceptor port
    # quickfix's acceptor listens on every interface; connections from other addresses than
    # these are closed before logon. Add an address here to accept remote clients.
    allowed_remote: tuple[str, ...] = ("127.0.0.1",)
    sender_comp_id: str = Field("", pattern=r"^([A-Za-z0-9_.-]+)?$")  # empty: VENUE_<name>
    # the clients it accepts, one session each
    target_comp_ids: tuple[Annotated[str, Field(pattern=_COMP_ID)], ...] = Field(("GATEWAY",), min_length=1)
    price_offset_bps: float = Field(0.0, ge=0)  # ask + offset, bid - offset, in bps of price
    price_offset: float = Field(0.0, ge=0)      # the same, in price units (e.g. ticks x tick size)
    display_fraction: float = Field(1.0, gt=0, le=1)  # share of the market's size shown here
    taker_fee_bps: float = 0.0                  # fees on fills; negative maker fees are rebates
    taker_fee_per_share: float = 0.0
    maker_fee_bps: float = 0.0
    maker_fee_per_share: float = 0.0
    latency_ms: float = Field(0.0, ge=0)        # a request takes effect this long after arrival
    halted: tuple[str, ...] = ()                # syms refused from the start (halt/resume live)
    syms: tuple[str, ...] = ()                  # the tradable universe; empty: any quoted sym

    @property
    def comp_id(self) -> str:
        return self.sender_comp_id or f"VENUE_{self.name}"

    def fill_model(self) -> FillModel:
        return FillModel(offset_bps=self.price_offset_bps, offset_abs=self.price_offset,
                         display_fraction=self.display_fraction, taker_fee_bps=self.taker_fee_bps,
                         taker_fee_per_share=self.taker_fee_per_share, maker_fee_bps=self.maker_fee_bps,
                         maker_fee_per_share=self.maker_fee_per_share,
                         latency_ns=round(self.latency_ms * 1_000_000))


# The stack's two simulated venues by default: A is the deeper, dearer one; B shows half the
# size a touch wider and cheaper, and answers a little later, so routing has a real choice.
DEFAULT_VENUES = {
    "A": VenueSettings(name="A", port=5301, display_fraction=1.0, taker_fee_bps=0.30,
                       maker_fee_bps=-0.20, latency_ms=0.2),
    "B": VenueSettings(name="B", port=5302, price_offset_bps=0.5, display_fraction=0.5,
                       taker_fee_bps=0.10, maker_fee_bps=-0.05, latency_ms=0.5),
}


def venues_by_name(value: dict) -> dict:
    """`[venues.X]` tables: each venue is named by its key (a `name` inside must agree). A table
    for one of the default venues (A, B) changes that venue's defaults, so `[venues.A]
    port = 5401` moves A and keeps its fees; the venues are the ones the config names (all
    the defaults when it names none)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError("[venues] holds one table per venue, e.g. [venues.A] port = 5301")
    out = {}
    for key, v in value.items():
        if isinstance(v, VenueSettings):
            v = v.model_dump()
        elif not isinstance(v, dict):
            raise ValueError(f"venues.{key} must be a table of venue settings ([venues.{key}]), not {v!r}")
        elif key in DEFAULT_VENUES:
            v = {**DEFAULT_VENUES[key].model_dump(), **v}
        v = dict(v)
        if v.setdefault("name", key) != key:
            raise ValueError(f"venues.{key}.name is {v['name']!r}; a venue is named by its key")
        out[key] = v
    return out


# the `venues` field of any config: a table of venues keyed by name (default: A and B)
Venues = Annotated[dict[str, VenueSettings], BeforeValidator(venues_by_name),
                   Field(default_factory=lambda: dict(DEFAULT_VENUES))]


class VenueConfig(StackSettings):
    """What `python -m gateway.venue --name X` reads: `[venues.X]` and the TP's endpoints."""
    tickerplant: TickerplantSettings = TickerplantSettings()
    venues: Venues
    health: HealthSettings = HealthSettings()
    curve: CurveSettings = CurveSettings()


class GatewaySettings(Settings):
    """The order gateway: its intents socket, its FIX sessions (one per venue it trades), what
    it publishes through the tickerplant, pre-trade risk, and its waits."""
    intents: str = "tcp://127.0.0.1:5040"     # ROUTER: strategies (DEALER) and the CLI (REQ)
    max_intent_bytes: int = Field(64 << 10, ge=1024)  # a larger request: the peer is dropped
    events_hwm: int = Field(100_000, ge=100)  # events queued per client before drops
    feed_id: int = Field(10, ge=1, le=2**32 - 1)  # the feed id of its order/execution rows
    sender_comp_id: str = Field("GATEWAY", pattern=_COMP_ID)  # venues accept it (target_comp_ids)
    venue_host: str = "127.0.0.1"             # where the venues' FIX acceptors listen
    heartbeat_s: int = Field(5, ge=1)         # FIX HeartBtInt
    reconnect_s: int = Field(1, ge=1)         # FIX ReconnectInterval
    venues: tuple[str, ...] = ()              # the venues it trades; empty: every configured one
    sor: bool = True                          # smart order routing across venues; off: one venue
    default_venue: str = ""                   # SOR off and no venue named: here (empty: the first)
    account: str = ""                         # the account of orders that name none
    risk: RiskSettings = RiskSettings()
    halt_timeout_s: float = Field(5.0, gt=0)  # halt waits this long for the venues' cancels
    recovery_timeout_s: float = Field(10.0, gt=0)  # at start: wait this long for the venues
    sync_timeout_s: float = Field(2.0, gt=0)  # a venue not caught up after logon: ask again
    max_waiting_intents: int = Field(10_000, ge=1)  # queued while recovering, then "busy"
    # order/execution rows go to the TP when the kernel has been idle this long, or when the
    # oldest waited publish_max_ms: publishing never sits between an order and its acks
    publish_idle_ms: float = Field(1.0, ge=1.0)
    publish_max_ms: float = Field(20.0, ge=1.0)


class GatewayConfig(StackSettings):
    """What `python -m gateway` reads: its section, the venues, the TP and the day rule."""
    tickerplant: TickerplantSettings = TickerplantSettings()
    eod: EodSettings = EodSettings()
    gateway: GatewaySettings = GatewaySettings()
    venues: Venues
    health: HealthSettings = HealthSettings()
    curve: CurveSettings = CurveSettings()
