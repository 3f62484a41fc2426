"""Top of book and trades from ITCH 5.0 order messages, as tickstack `quote`/`trade` columns.

Order book rebuild without a Python step per message:

1. Orders. Every order is created by an add (A/F) or by a replace (U, new reference number);
   each E/C/X/D/U refers to one by reference number (unique for the day), found with one
   sorted search. A replaced order inherits its stock and side through the chain of replaces
   (pointer doubling). Each order's remaining shares is a grouped cumulative sum of its events
   in file order, which gives a delete (or the replaced half of a U) its size.
   Bad data has defined, tested results: an execution or cancel larger than the order is cut
   to what it has, events on unknown or finished orders are ignored, and a reused reference
   number names its latest order (exactly what `reference_tables` does, message by message).
2. Price levels. Each order event changes one (stock, side, price) level; a grouped cumsum
   gives every level's size after every change, hence the message ranges over which the
   level is alive (size > 0).
3. Best prices. "Best bid after message q" is the maximum price over bid levels alive at q:
   a range-max update / point query problem, solved offline for all messages at once with a
   segment tree (each interval is a few tree nodes, updated level by level with
   np.maximum.at, then pushed down). The ask is the same on negated prices.
4. A quote row is emitted for a message whose stock's (bid, ask, bsize, asize) changed.

State (live orders and the last quote per stock) carries from one chunk to the next, so
`iter_itch_batches` streams a file of any size in bounded memory.

`reference_tables` is the slow, obvious per-message implementation, kept only as an
independent check for the tests.
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np

from feedhandlers.itch.parser import TRUNCATED, Parsed, parse
from feedhandlers.itch.spec import timestamps

NEW_YORK = ZoneInfo("America/New_York")
PRICE_SCALE = 1e4
_NONE_ASK = np.int64(1 << 32)  # asks are ranked by (2**32 - price): 0 means "no ask"
_EMPTY_I8 = np.empty(0, np.int64)
MIN_WINDOW = 1 << 17  # bytes parsed at a time by iter_itch_batches; > the longest frame
_ADD, _EXEC, _EXEC_PX, _CANCEL, _KILL = range(5)  # order event kinds


def midnight_utc_ns(date: dt.date | str) -> int:
    """ns since the epoch (UTC) of midnight in New York on `date` (ITCH timestamps' origin)."""
    if isinstance(date, str):
        date = dt.date.fromisoformat(date)
    m = dt.datetime(date.year, date.month, date.day, tzinfo=NEW_YORK)
    return int(m.timestamp()) * 1_000_000_000


def _empty_quote() -> dict[str, np.ndarray]:
    return {"time": _EMPTY_I8.copy(), "sym": np.empty(0, "U8"), "bid": np.empty(0),
            "ask": np.empty(0), "bsize": _EMPTY_I8.copy(), "asize": _EMPTY_I8.copy()}


def _empty_trade() -> dict[str, np.ndarray]:
    return {"time": _EMPTY_I8.copy(), "sym": np.empty(0, "U8"), "price": np.empty(0),
            "size": _EMPTY_I8.copy()}


@dataclass
class BookState:
    """What one chunk hands to the next: live orders and each stock's last quote."""
    ref: np.ndarray = field(default_factory=lambda: _EMPTY_I8)  # uint64 refs as int64 bits
    loc: np.ndarray = field(default_factory=lambda: _EMPTY_I8)
    bid: np.ndarray = field(default_factory=lambda: np.empty(0, bool))  # True: a buy order
    price: np.ndarray = field(default_factory=lambda: _EMPTY_I8)
    shares: np.ndarray = field(default_factory=lambda: _EMPTY_I8)
    symbols: np.ndarray | None = None  # locate -> symbol (U8), from R messages so far
    last_quote: np.ndarray | None = None  # (65536, 4) int64: bid, ask, bsize, asize ticks


def _symbols(p: Parsed, known: np.ndarray | None) -> np.ndarray:
    syms = np.full(65536, "", dtype="U8") if known is None else known.copy()
    r = p["R"]
    if len(r):
        names = np.char.strip(np.char.decode(r["stock"], "ascii", errors="replace"))
        syms[r["stock_locate"].astype(np.int64)] = names
    return syms


def _group_cumsum(values: np.ndarray, new_group: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting where new_group is True (rows sorted by group)."""
    cs = np.cumsum(values)
    starts = np.flatnonzero(new_group)
    base = np.zeros(len(values), dtype=cs.dtype)
    if len(starts):
        before = cs[starts] - values[starts]
        base = np.repeat(before, np.diff(np.append(starts, len(values))))
    return cs - base


def _roots(parent: np.ndarray) -> np.ndarray:
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def _range_max(n: int, lo: np.ndarray, hi: np.ndarray, val: np.ndarray) -> np.ndarray:
    """out[q] = max(val[i] for intervals i with lo[i] <= q < hi[i]), 0 where none (val > 0)."""
    size = 1
    while size < max(n, 1):
        size *= 2
    tree = np.zeros(2 * size, dtype=np.int64)
    keep = lo < hi
    l, r, v = lo[keep] + size, hi[keep] + size, val[keep].astype(np.int64)
    while len(l):
        # Standard bottom-up decomposition, for all intervals at once, one tree level per pass.
        m = (l & 1).astype(bool)
        np.maximum.at(tree, l[m], v[m])
        l = l + m
        m = (r & 1).astype(bool)
        r = r - m
        np.maximum.at(tree, r[m], v[m])
        l >>= 1
        r >>= 1
        keep = l < r
        l, r, v = l[keep], r[keep], v[keep]
    lvl = 1
    while lvl < size:  # push every node's max down to its children, a tree level at a time
        parents = tree[lvl:2 * lvl]
        for child in (tree[2 * lvl:4 * lvl:2], tree[2 * lvl + 1:4 * lvl:2]):  # views: in place
            np.maximum(child, parents, out=child)
        lvl *= 2
    return tree[size:size + n]


def _u8(x) -> np.ndarray:
    return np.asarray(x).astype(np.uint64).view(np.int64)


def rebuild(p: Parsed, midnight_ns: int, state: BookState | None = None,
            first_message: int = 0) -> tuple[dict, dict, BookState]:
    """(quote columns, trade columns, state after) for one parsed chunk; both tables carry an
    extra `msg` column (message number in the file: first_message + index in the chunk)."""
    state = state or BookState()
    syms = _symbols(p, state.symbols)
    last_quote = (np.zeros((65536, 4), np.int64) if state.last_quote is None
                  else state.last_quote.copy())
    A, F, U = p["A"], p["F"], p["U"]
    ncarry = len(state.ref)

    # 1. Orders: carried ones (message -1), adds, replacements' new halves. A reference
    # number names the latest order created with it before a message (unique in real data).
    c_ref = np.concatenate([state.ref, _u8(A["order_reference_number"]),
                            _u8(F["order_reference_number"]), _u8(U["new_order_reference_number"])])
    c_msg = np.concatenate([np.full(ncarry, -1, np.int64), p.index["A"], p.index["F"],
                            p.index["U"]]).astype(np.int64)
    c_loc = np.concatenate([state.loc, A["stock_locate"], F["stock_locate"],
                            U["stock_locate"]]).astype(np.int64)
    c_bid = np.concatenate([state.bid, A["buy_sell_indicator"] == b"B",
                            F["buy_sell_indicator"] == b"B", np.zeros(len(U), bool)])
    c_price = np.concatenate([state.price, A["price"], F["price"], U["price"]]).astype(np.int64)
    c_shares = np.concatenate([state.shares, A["shares"], F["shares"], U["shares"]]).astype(np.int64)
    ncre = len(c_ref)
    by_ref = np.lexsort((c_msg, c_ref))
    s_ref, s_msg = c_ref[by_ref], c_msg[by_ref]

    def order_of(refs: np.ndarray, msg: np.ndarray) -> np.ndarray:
        """Row of the latest order created with each ref before msg; -1 if none."""
        if ncre == 0:
            return np.full(len(refs), -1, np.int64)
        i = np.searchsorted(s_ref, refs, side="right") - 1
        while True:  # step back over creations at/after msg: only a reused ref needs this
            j = np.maximum(i, 0)
            later = (i >= 0) & (s_ref[j] == refs) & (s_msg[j] >= msg)
            if not later.any():
                break
            i[later] -= 1
        j = np.maximum(i, 0)
        return np.where((i >= 0) & (s_ref[j] == refs), by_ref[j], -1)

    u_rows = np.arange(ncre - len(U), ncre)
    u_parent = order_of(_u8(U["original_order_reference_number"]), p.index["U"])
    parent = np.arange(ncre + 1)  # the extra last row stands for "unknown order"
    parent[u_rows] = np.where(u_parent >= 0, u_parent, ncre)
    root = _roots(parent)[:ncre]
    # A replacement keeps its original's stock and side, through any chain of replaces.
    c_bid = np.append(c_bid, False)[root]
    c_loc = np.append(c_loc, 0)[root]

    E, C, X, D = p["E"], p["C"], p["X"], p["D"]
    # Every order event: (order row, message, shares taken, kind, position in its type's array)
    ev_row0 = np.concatenate([np.arange(ncre), order_of(_u8(E["order_reference_number"]), p.index["E"]),
                              order_of(_u8(C["order_reference_number"]), p.index["C"]),
                              order_of(_u8(X["order_reference_number"]), p.index["X"]),
                              order_of(_u8(D["order_reference_number"]), p.index["D"]), u_parent])
    ev_msg0 = np.concatenate([c_msg, p.index["E"], p.index["C"], p.index["X"], p.index["D"],
                              p.index["U"]]).astype(np.int64)
    ev_take0 = np.concatenate([np.zeros(ncre, np.int64), E["executed_shares"], C["executed_shares"],
                               X["cancelled_shares"], np.zeros(len(D) + len(U), np.int64)]).astype(np.int64)
    ev_kind0 = np.repeat(np.array([_ADD, _EXEC, _EXEC_PX, _CANCEL, _KILL, _KILL], np.int8),
                         [ncre, len(E), len(C), len(X), len(D), len(U)])
    ev_src0 = np.concatenate([np.arange(n) for n in (ncre, len(E), len(C), len(X), len(D), len(U))])
    u_kill = np.arange(len(ev_row0) - len(U), len(ev_row0))

    # An order lives from its creation (with shares) until it is used up, deleted or replaced;
    # events on a dead or unknown order are ignored. A replace of a dead order creates nothing,
    # which can kill further replaces: iterate (once in practice, chains need more on bad data).
    known = (c_shares > 0) & (root < ncre)
    while True:
        keep = ev_row0 >= 0
        keep[keep] &= known[ev_row0[keep]]
        sel = np.flatnonzero(keep)
        sel = sel[np.lexsort((ev_msg0[sel], ev_row0[sel]))]
        row, kind, take = ev_row0[sel], ev_kind0[sel], ev_take0[sel]
        new_order = np.ones(len(row), bool)
        new_order[1:] = row[1:] != row[:-1]
        start = np.flatnonzero(new_order)
        init = np.repeat(c_shares[row[start]], np.diff(np.append(start, len(row))))
        taken_before = _group_cumsum(take, new_order) - take
        kills_before = _group_cumsum((kind == _KILL).astype(np.int64), new_order) - (kind == _KILL)
        alive = (taken_before < init) & (kills_before == 0)
        u_alive = np.zeros(len(ev_row0), bool)
        u_alive[sel[alive]] = True
        now = known.copy()
        now[u_rows] &= u_alive[u_kill]
        if np.array_equal(now, known):
            break
        known = now
    sel, row, kind, take, init, taken_before = (x[alive] for x in (sel, row, kind, take, init,
                                                                   taken_before))
    have = init - taken_before  # shares the order has before the event
    gone = np.where(kind == _KILL, have, np.minimum(take, have))
    ev_delta = np.where(kind == _ADD, init, -gone)
    left = np.where(kind == _ADD, init, have - gone)
    ev_row, ev_msg = row, ev_msg0[sel]

    # Live orders after this chunk: each order's last event left shares.
    last = np.ones(len(row), bool)
    last[:-1] = row[1:] != row[:-1]
    live = last & (left > 0)
    lr = ev_row[live]
    out_state = BookState(c_ref[lr], c_loc[lr], c_bid[lr], c_price[lr], left[live], syms, None)

    # 2. Book messages ("q"): one per (stock, message); sorted by stock, then file order.
    ev_loc = c_loc[ev_row]
    ev_side = c_bid[ev_row]
    ev_price = c_price[ev_row]
    # A message touches one stock (a replace keeps its original's), and carried orders form
    # one pseudo-message per stock: so q ids come from a sort of messages, not of events.
    real = ev_msg >= 0
    msg_loc = np.full(p.n_messages, -1, np.int64)
    msg_loc[ev_msg[real]] = ev_loc[real]
    touched = np.flatnonzero(msg_loc >= 0)
    pseudo = np.unique(ev_loc[~real])
    q_loc = np.concatenate([pseudo, msg_loc[touched]])
    q_msg = np.concatenate([np.full(len(pseudo), -1, np.int64), touched])
    # Stable by stock keeps file order within it; a uint16 key gets numpy's radix sort.
    by_loc = np.argsort(q_loc.astype(np.uint16), kind="stable")
    q_loc, q_msg = q_loc[by_loc], q_msg[by_loc]
    nq = len(q_loc)
    q_of = np.zeros(p.n_messages + 65536, np.int64)  # message -> q, then stock -> pseudo q
    q_of[np.where(q_msg >= 0, q_msg, p.n_messages + q_loc)] = np.arange(nq)
    ev_q = q_of[np.where(real, ev_msg, p.n_messages + ev_loc)]
    first_of_loc = np.ones(nq, bool)
    first_of_loc[1:] = q_loc[1:] != q_loc[:-1]
    loc_start = np.flatnonzero(first_of_loc)
    loc_end = np.append(loc_start[1:], nq) if nq else loc_start
    q_loc_end = np.repeat(loc_end, loc_end - loc_start)

    # Level changes, aggregated per (level, q).
    lkey = (ev_loc << 33) | (ev_side.astype(np.int64) << 32) | ev_price
    o = np.lexsort((ev_q, lkey))
    lkey, lq, ld = lkey[o], ev_q[o], ev_delta[o]
    run = np.ones(len(lkey), bool)
    run[1:] = (lkey[1:] != lkey[:-1]) | (lq[1:] != lq[:-1])
    starts = np.flatnonzero(run)
    lkey, lq = lkey[starts], lq[starts]
    ld = np.add.reduceat(ld, starts) if len(ld) else ld
    new_level = np.ones(len(lkey), bool)
    new_level[1:] = lkey[1:] != lkey[:-1]
    lsize = _group_cumsum(ld, new_level)
    lid = np.cumsum(new_level) - 1
    level_keys = lkey[new_level]

    # Alive intervals [q_on, q_off) of each level.
    alive = lsize > 0
    was = np.zeros(len(alive), bool)
    was[1:] = alive[:-1] & ~new_level[1:]
    on = np.flatnonzero(alive & ~was)
    off_mask = ~alive & was
    ends_alive = alive & np.append(new_level[1:], True)
    off_q = np.where(off_mask, lq, np.where(ends_alive, q_loc_end[lq] if nq else lq, -1))
    off = off_q[off_mask | ends_alive]
    on_q = lq[on]
    on_side = (lkey[on] >> 32) & 1
    on_price = lkey[on] & 0xFFFFFFFF

    # 3. Best prices after every q, and the sizes there.
    isb = on_side == 1
    best_bid = _range_max(nq, on_q[isb], off[isb], on_price[isb])
    ask_rank = _range_max(nq, on_q[~isb], off[~isb], _NONE_ASK - on_price[~isb])
    best_ask = np.where(ask_rank > 0, _NONE_ASK - ask_rank, 0)

    stamp = lid.astype(np.int64) * (nq + 1) + lq  # level changes, sorted by (level, q)

    def size_at(side: int, price: np.ndarray) -> np.ndarray:
        """Size of the (stock of q, side, price) level after each q; 0 for price 0."""
        if len(level_keys) == 0:
            return np.zeros(nq, np.int64)
        key = (q_loc << 33) | (side << 32) | price
        i = np.minimum(np.searchsorted(level_keys, key), len(level_keys) - 1)
        found = (price > 0) & (level_keys[i] == key)
        j = np.searchsorted(stamp, i.astype(np.int64) * (nq + 1) + np.arange(nq), side="right") - 1
        return np.where(found & (j >= 0), lsize[np.maximum(j, 0)], 0)

    bsize = size_at(1, best_bid)
    asize = size_at(0, best_ask)

    # 4. Emit where a stock's top of book changed (carried orders' q is not a message).
    top = np.stack([best_bid, best_ask, bsize, asize], axis=1) if nq else np.zeros((0, 4), np.int64)
    prev = np.empty_like(top)
    prev[1:] = top[:-1]
    fl = first_of_loc
    prev[fl] = last_quote[q_loc[fl]]
    emit = (top != prev).any(axis=1) & (q_msg >= 0)
    if nq:
        last_quote[q_loc[loc_end - 1]] = top[loc_end - 1]
    out_state.last_quote = last_quote

    ts = np.zeros(p.n_messages, np.int64)
    for t in ("A", "F", "E", "C", "X", "D", "U", "P"):
        ts[p.index[t]] = timestamps(p[t]).astype(np.int64)
    qi = np.flatnonzero(emit)
    qi = qi[np.argsort(q_msg[qi], kind="stable")]
    qm = q_msg[qi]
    bid_px, ask_px = best_bid[qi], best_ask[qi]
    quote = {"time": midnight_ns + ts[qm], "sym": syms[q_loc[qi]],
             "bid": np.where(bid_px > 0, bid_px / PRICE_SCALE, np.nan),
             "ask": np.where(ask_px > 0, ask_px / PRICE_SCALE, np.nan),
             "bsize": bsize[qi], "asize": asize[qi], "msg": qm + first_message}

    # Trades: E at the resting order's price, printable C at its own price, P; the size is
    # what the order really had (a larger execution on bad data is cut to it).
    src = ev_src0[sel]
    is_e = (kind == _EXEC) & (gone > 0)
    is_c = (kind == _EXEC_PX) & (gone > 0)
    is_c[is_c] &= C["printable"][src[is_c]] == b"Y"
    P = p["P"]
    p_ok = P["shares"] > 0
    t_msg = np.concatenate([ev_msg[is_e], ev_msg[is_c], p.index["P"][p_ok]]).astype(np.int64)
    t_loc = np.concatenate([E["stock_locate"][src[is_e]], C["stock_locate"][src[is_c]],
                            P["stock_locate"][p_ok]]).astype(np.int64)
    t_px = np.concatenate([c_price[row[is_e]], C["execution_price"][src[is_c]],
                           P["price"][p_ok]]).astype(np.int64)
    t_sz = np.concatenate([gone[is_e], gone[is_c], P["shares"][p_ok]]).astype(np.int64)
    o = np.argsort(t_msg, kind="stable")
    trade = {"time": midnight_ns + ts[t_msg[o]], "sym": syms[t_loc[o]], "price": t_px[o] / PRICE_SCALE,
             "size": t_sz[o], "msg": t_msg[o] + first_message}
    return quote, trade, out_state


def _strip_msg(cols: dict) -> dict:
    return {k: v for k, v in cols.items() if k != "msg"}


def _load(path_or_buf):
    if isinstance(path_or_buf, (str, os.PathLike)):
        if os.path.getsize(path_or_buf) == 0:
            return np.empty(0, np.uint8)
        return np.memmap(path_or_buf, dtype=np.uint8, mode="r")
    return path_or_buf


def itch_tables(path_or_buf: str | os.PathLike | bytes | np.ndarray,
                date: dt.date | str) -> dict[str, dict[str, np.ndarray]]:
    """{"quote": columns, "trade": columns} of a whole ITCH 5.0 FILE (path or bytes), in
    file order, shaped for tickstack's `quote` and `trade` tables. Memory grows with the file
    (~100 bytes a message): stream a full day with `iter_itch_batches` instead."""
    p = parse(_load(path_or_buf))
    quote, trade, _ = rebuild(p, midnight_utc_ns(date))
    return {"quote": _strip_msg(quote), "trade": _strip_msg(trade)}


def iter_itch_batches(path: str | os.PathLike | bytes, date: dt.date | str,
                      batch_messages: int = 1_000_000, errors: dict[str, int] | None = None,
                      ) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Yield ("quote" | "trade", columns) for an ITCH 5.0 FILE (a path, or bytes), a chunk
    of about `batch_messages` messages at a time, chunks in file order (within a chunk its
    quotes come before its trades; within a table rows are in file order). Book state
    carries across chunks, so memory is bounded by the chunk, not the file. Bad frames are
    skipped as in `parse`; pass a dict as `errors` to have their counts added to it."""
    buf = _load(path)
    n = len(buf)
    window = max(batch_messages * 40, MIN_WINDOW)  # ~36 bytes a message
    midnight = midnight_utc_ns(date)
    state, start, first = None, 0, 0
    while start < n:
        end = min(n, start + window)
        p = parse(buf[start:end])
        if p.consumed == 0 and end < n:  # one frame longer than the window: widen it
            window *= 2
            continue
        if end < n:  # a frame cut by the window is not an error: the next window reads it
            p.errors[TRUNCATED] -= int(p.consumed < end - start)
        quote, trade, state = rebuild(p, midnight, state, first)
        if errors is not None:
            for k, v in p.errors.items():
                errors[k] = errors.get(k, 0) + v
        first += p.n_messages
        start = start + p.consumed if end < n else n
        if len(quote["time"]):
            yield "quote", _strip_msg(quote)
        if len(trade["time"]):
            yield "trade", _strip_msg(trade)


def reference_tables(path_or_buf, date: dt.date | str) -> dict[str, dict[str, np.ndarray]]:
    """Slow reference: the same tables by a plain per-message book (tests only)."""
    p = parse(_load(path_or_buf))
    midnight = midnight_utc_ns(date)
    syms = _symbols(p, None)
    msgs = []
    for t in ("A", "F", "E", "C", "X", "D", "U", "P"):
        for i, r in zip(p.index[t].tolist(), p[t].tolist()):
            msgs.append((i, t, r))
    msgs.sort(key=lambda m: m[0])
    orders: dict[int, list] = {}  # ref -> [loc, is_bid, price, shares]
    levels: dict[tuple, int] = {}  # (loc, is_bid, price) -> shares
    last: dict[int, tuple] = {}
    q_rows, t_rows = [], []

    def change(loc, is_bid, price, d):
        k = (loc, is_bid, price)
        levels[k] = levels.get(k, 0) + d
        if levels[k] == 0:
            del levels[k]

    for i, t, r in msgs:
        loc, ns = r[1], (r[3] << 32) | r[4]
        if t in "AF":
            if r[7] == 0:  # an empty order is dead at birth, but it still takes the ref
                orders.pop(r[5], None)
                continue
            orders[r[5]] = [loc, r[6] == b"B", r[9], r[7]]
            change(loc, r[6] == b"B", r[9], r[7])
        elif t == "P":
            if r[7]:
                t_rows.append((ns, loc, r[9], r[7]))
            continue
        else:
            o = orders.get(r[5])
            if o is None:
                if t == "U":
                    orders.pop(r[6], None)
                continue
            if t in "ECX":
                n = min(r[6], o[3])
                o[3] -= n
                change(o[0], o[1], o[2], -n)
                if n and t == "E":
                    t_rows.append((ns, loc, o[2], n))
                if n and t == "C" and r[8] == b"Y":
                    t_rows.append((ns, loc, r[9], n))
                if o[3] == 0:
                    del orders[r[5]]
            elif t == "D":
                change(o[0], o[1], o[2], -o[3])
                del orders[r[5]]
            else:  # U: the new order keeps the stock and side of the original
                change(o[0], o[1], o[2], -o[3])
                del orders[r[5]]
                if r[7]:
                    orders[r[6]] = [o[0], o[1], r[8], r[7]]
                    change(o[0], o[1], r[8], r[7])
                else:
                    orders.pop(r[6], None)
            loc = o[0]
        bids = [k[2] for k in levels if k[0] == loc and k[1]]
        asks = [k[2] for k in levels if k[0] == loc and not k[1]]
        bb, ba = max(bids, default=0), min(asks, default=0)
        top = (bb, ba, levels.get((loc, True, bb), 0), levels.get((loc, False, ba), 0))
        if top != last.get(loc, (0, 0, 0, 0)):
            last[loc] = top
            q_rows.append((ns, loc) + top)
    quote = _empty_quote()
    if q_rows:
        a = np.array(q_rows, dtype=np.int64)
        quote = {"time": midnight + a[:, 0], "sym": syms[a[:, 1]],
                 "bid": np.where(a[:, 2] > 0, a[:, 2] / PRICE_SCALE, np.nan),
                 "ask": np.where(a[:, 3] > 0, a[:, 3] / PRICE_SCALE, np.nan),
                 "bsize": a[:, 4], "asize": a[:, 5]}
    trade = _empty_trade()
    if t_rows:
        a = np.array(t_rows, dtype=np.int64)
        trade = {"time": midnight + a[:, 0], "sym": syms[a[:, 1]], "price": a[:, 2] / PRICE_SCALE,
                 "size": a[:, 3]}
    return {"quote": quote, "trade": trade}
