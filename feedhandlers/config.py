"""Feed settings; the defaults here are the only ones.

The buffer and batching knobs are read by `feedhandlers.base.Feed`; `syms`/`rate`/`seed` by the
simulator. A `Feed` may override any of them with keyword arguments.
"""
from typing import Literal, Optional

from pydantic import Field

from schemas.settings import Settings, StackSettings
from tickerplant.config import CurveSettings, EodSettings, HealthSettings, TickerplantSettings


class FeedSettings(Settings):
    syms: int = Field(20, ge=1)            # simulator: number of symbols
    rate: float = Field(1000.0, gt=0)      # simulator: ticks per second
    seed: int = 42
    feed_id: int = Field(1, ge=1, le=2**32 - 1)  # u32 the TP dedups resent messages by
    # Batching: rows of one table accumulate until either limit, then go as one message.
    # batch_rows=1 or batch_ms=0 sends every publish() at once (zero-latency mode).
    batch_rows: int = Field(10_000, ge=1)
    batch_ms: float = Field(20.0, ge=0)
    # Unacked messages kept for resend while the TP is down or slow.
    buffer_bytes: int = Field(512 << 20, ge=1024)
    buffer_msgs: int = Field(100_000, ge=1)
    # When the buffer is full the producer blocks up to block_s for acks to free space, then
    # applies on_full: drop the oldest unacked message (counted), drop the new one (counted), or
    # raise BufferFull in the producer.
    block_s: float = Field(1.0, ge=0)
    on_full: Literal["drop_oldest", "drop_newest", "error"] = "drop_oldest"
    # No ack for this long while messages are outstanding: assume they were lost and resend
    # (doubling up to 16x while it keeps happening; the TP drops what it already logged).
    ack_timeout_ms: int = Field(2000, ge=10)
    hello_timeout_ms: int = Field(1000, ge=0)   # wait at start for the TP's last fseq
    close_timeout_s: float = Field(10.0, ge=0)   # close(): wait this long for the last acks
    # Rate limits (token bucket, sleeps, never spins); None = unlimited.
    max_rows_per_s: Optional[float] = Field(None, gt=0)
    max_msgs_per_s: Optional[float] = Field(None, gt=0)


class FeedConfig(StackSettings):
    """What `python -m feedhandlers` reads (the TP's endpoints, the day rule for ITCH dates)."""
    tickerplant: TickerplantSettings = TickerplantSettings()
    eod: EodSettings = EodSettings()
    feed: FeedSettings = FeedSettings()
    health: HealthSettings = HealthSettings()
    curve: CurveSettings = CurveSettings()
