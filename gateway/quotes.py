"""The gateway's view of each venue's book top, for smart order routing.

    view = QuoteView({"A": settings_a, "B": settings_b})
    view.on_batch(batch)                      # a quote table batch from the tickerplant
    view.quotes("AAPL", ["A", "B"])           # {venue: gateway.sor.VenueQuote}
    view.consume("A", "AAPL", Side.BUY, 300)  # we just sent 300 to take at A

Each venue's view is the market's quote transformed as that venue transforms it (the same
rule as gateway.matching, from its VenueSettings): bid - offset and ask + offset, offset =
price x price_offset_bps / 1e4 + price_offset, rounded to 1e-8; displayed size = floor(size x
display_fraction); taker fees per share and in bps. Minus what we consumed: an order the SOR
sends to take at a venue uses that venue's displayed size on that side, and the size stays
used until a later quote changes that side's price or size (as the venue's engine
replenishes), so two parents in a row are never routed to the same displayed size.

Batches: the latest row per sym is found with numpy (lexsort); Python work is per sym in the
batch, not per row. A row with a non-finite or non-positive price on a side leaves that side
without a quote (size 0).
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gateway.model import Side
from gateway.sor import VenueQuote

_NONE = (0.0, 0.0, 0, 0)


def latest_rows(batch: pa.RecordBatch) -> list[tuple[str, float, float, int, int, int]]:
    """(sym, bid, ask, bsize, asize, time) of each sym's newest row in a quote batch."""
    n = batch.num_rows
    if not n:
        return []
    sym = batch.column("sym")
    if not pa.types.is_dictionary(sym.type):
        sym = pc.dictionary_encode(sym)
    codes = sym.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    names = sym.dictionary.to_pylist()
    t = batch.column("time")
    if pa.types.is_timestamp(t.type):
        t = t.cast(pa.int64())
    times = t.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((times, codes))
    c = codes[order]
    last = order[np.r_[c[1:] != c[:-1], True]]
    last = last[codes[last] >= 0]

    def col(name, kind):
        return batch.column(name).to_numpy(zero_copy_only=False)[last].astype(kind)
    bid, ask = col("bid", np.float64), col("ask", np.float64)
    bs = np.nan_to_num(col("bsize", np.float64), nan=0.0).astype(np.int64)
    asz = np.nan_to_num(col("asize", np.float64), nan=0.0).astype(np.int64)
    return list(zip([names[k] for k in codes[last].tolist()], bid.tolist(), ask.tolist(),
                    bs.tolist(), asz.tolist(), times[last].tolist()))


class QuoteView:
    def __init__(self, venues: dict):
        """`venues`: {name: VenueSettings} of the venues the gateway trades."""
        self.venues = venues
        self._market: dict[str, tuple[float, float, int, int]] = {}
        self._consumed: dict[tuple[str, str], list[int]] = {}   # (venue, sym) -> [bid, ask] used
        self.rows = 0

    def on_batch(self, batch: pa.RecordBatch) -> int:
        """Apply a quote batch; returns the number of syms updated."""
        self.rows += batch.num_rows
        rows = latest_rows(batch)
        market, consumed = self._market, self._consumed
        for sym, b, a, bs, asz, _ in rows:
            new = (b if 0 < b < math.inf else 0.0, a if 0 < a < math.inf else 0.0, max(bs, 0), max(asz, 0))
            old = market.get(sym, _NONE)
            market[sym] = new
            if consumed and (old[0] != new[0] or old[2] != new[2] or old[1] != new[1] or old[3] != new[3]):
                for v in self.venues:
                    used = consumed.get((v, sym))
                    if used is not None:
                        if old[0] != new[0] or old[2] != new[2]:
                            used[0] = 0
                        if old[1] != new[1] or old[3] != new[3]:
                            used[1] = 0
        return len(rows)

    def market(self, sym: str) -> tuple[float, float, int, int] | None:
        """The market's (bid, ask, bsize, asize), as last quoted."""
        return self._market.get(sym)

    def quote(self, venue: str, sym: str) -> VenueQuote:
        s = self.venues[venue]
        b, a, bs, asz = self._market.get(sym, _NONE)
        used = self._consumed.get((venue, sym), (0, 0))
        bid = round(b - (b * s.price_offset_bps * 1e-4 + s.price_offset), 8) if b > 0 else 0.0
        ask = round(a + (a * s.price_offset_bps * 1e-4 + s.price_offset), 8) if a > 0 else 0.0
        bsize = max(0, math.floor(bs * s.display_fraction) - used[0]) if bid > 0 else 0
        asize = max(0, math.floor(asz * s.display_fraction) - used[1]) if ask > 0 else 0
        return VenueQuote(bid, ask, bsize, asize, s.taker_fee_per_share, s.taker_fee_bps)

    def quotes(self, sym: str, venues) -> dict[str, VenueQuote]:
        return {v: self.quote(v, sym) for v in venues}

    def consume(self, venue: str, sym: str, side: Side, qty: int, limit: float | None = None) -> int:
        """`qty` sent to `venue` takes what it displays on the far side (asks for a buy) when
        its price is within `limit` (None: a market order); returns the quantity counted."""
        q = self.quote(venue, sym)
        buy = side is Side.BUY
        px, shown = (q.ask, q.ask_size) if buy else (q.bid, q.bid_size)
        if limit is not None and not (px <= limit if buy else px >= limit):
            return 0
        take = min(qty, shown)
        if take > 0:
            used = self._consumed.setdefault((venue, sym), [0, 0])
            used[1 if side is Side.BUY else 0] += take
        return take
