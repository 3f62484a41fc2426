"""Venue settings; the defaults here are the only ones."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.matching import FillModel
from schemas.settings import Settings

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
