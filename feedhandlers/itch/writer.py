"""Write spec-conformant NASDAQ ITCH 5.0 FILEs from simulated order flow.

The simulation is deterministic for a seed: a day's system events, a stock directory, trading
actions and the other administrative messages (one of every ITCH 5.0 type appears), then
continuous trading (adds with and without MPID, executions with and without price, cancels,
deletes, replaces, hidden trades, crosses, broken trades, imbalance indicators) around a random
walk per symbol. The order state is simulated message by message (this is a test-data
generator, not a hot path); the bytes are laid out in one vectorized pass per type.
"""
from __future__ import annotations

import heapq
import os
from collections import defaultdict

import numpy as np

from feedhandlers.itch.spec import DTYPES, SIZES, split_timestamps

NS = 1_000_000_000
HOUR = 3600 * NS
OPEN, CLOSE = int(9.5 * HOUR), 16 * HOUR
DEFAULT_SYMS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "QQQ")


def _pad(s: str, n: int) -> bytes:
    return s.encode("ascii")[:n].ljust(n, b" ")


class _Tape:
    """Messages in order: per-type field tuples (without the header) plus the type sequence."""

    def __init__(self):
        self.rows: dict[str, list[tuple]] = defaultdict(list)
        self.order: list[str] = []
        self.head: list[tuple[int, int, int]] = []  # (locate, tracking, ns)

    def add(self, t: str, locate: int, ns: int, *body) -> None:
        self.rows[t].append(body)
        self.order.append(t)
        self.head.append((locate, len(self.order) & 0xFFFF, ns))

    def to_bytes(self) -> bytes:
        order = np.frombuffer("".join(self.order).encode(), dtype=np.uint8)
        sizes = np.zeros(256, dtype=np.int64)
        for t, n in SIZES.items():
            sizes[ord(t)] = n
        lens = sizes[order]
        starts = np.zeros(len(order), dtype=np.int64)
        np.cumsum(lens[:-1] + 2, out=starts[1:])
        out = np.zeros(int(lens.sum() + 2 * len(order)), dtype=np.uint8)
        out[starts] = lens >> 8
        out[starts + 1] = lens & 0xFF
        head = np.array(self.head, dtype=np.int64).reshape(-1, 3)
        for t, dt in DTYPES.items():
            pos = np.flatnonzero(order == ord(t))
            if len(pos) == 0:
                continue
            rec = np.zeros(len(pos), dtype=dt)
            rec["type"] = t.encode()
            rec["stock_locate"] = head[pos, 0]
            rec["tracking_number"] = head[pos, 1]
            rec["ts_hi"], rec["ts_lo"] = split_timestamps(head[pos, 2])
            body = dt.names[5:]
            cols = list(zip(*self.rows[t])) if body else []
            for name, col in zip(body, cols):
                rec[name] = np.array(col, dtype=dt[name])
            raw = rec.view(np.uint8).reshape(len(pos), dt.itemsize)
            out[(starts[pos] + 2)[:, None] + np.arange(dt.itemsize)] = raw
        return out.tobytes()


def _directory(tape: _Tape, syms, ns: int) -> None:
    for loc, s in enumerate(syms, 1):
        ns += 4
        tape.add("R", loc, ns, _pad(s, 8), b"Q", b"N", 100, b"N", b"C", b"Z ", b"P", b"N", b"N",
                 b"1", b"N", 0, b"N")
        tape.add("H", loc, ns + 1, _pad(s, 8), b"T", b" ", b"    ")
        tape.add("Y", loc, ns + 2, _pad(s, 8), b"0")
        tape.add("L", loc, ns + 3, b"NITE", _pad(s, 8), b"Y", b"N", b"A")


def _others(tape: _Tape, syms, mids, ns: int) -> None:
    """One of each administrative type nobody trades on but a parser must read."""
    p = int(mids[0] * 1e4)
    tape.add("V", 0, ns, 3_500_000_000_000, 3_300_000_000_000, 3_000_000_000_000)
    tape.add("W", 0, ns + 1, b"1")
    tape.add("K", 1, ns + 2, _pad(syms[0], 8), 34_200, b"A", p)
    tape.add("J", 1, ns + 3, _pad(syms[0], 8), p, p + p // 10, p - p // 10, 1)
    tape.add("h", 1, ns + 4, _pad(syms[0], 8), b"Q", b"T")
    tape.add("N", 1, ns + 5, _pad(syms[0], 8), b"B")
    tape.add("O", 1, ns + 6, _pad(syms[0], 8), b"Y", p // 2, p * 2, p, ns, p - p // 10,
             p + p // 10)


class _Side:
    """One side of a simulated book: price levels of FIFO queues, best price via a lazy heap."""

    def __init__(self, is_bid: bool):
        self.sign = -1 if is_bid else 1
        self.levels: dict[int, dict[int, int]] = {}  # price -> {ref: shares}, in time priority
        self.heap: list[int] = []

    def add(self, price: int, ref: int, shares: int) -> None:
        q = self.levels.get(price)
        if q is None:
            q = self.levels[price] = {}
            heapq.heappush(self.heap, self.sign * price)
        q[ref] = shares

    def best(self) -> int | None:
        while self.heap and (self.sign * self.heap[0]) not in self.levels:
            heapq.heappop(self.heap)
        return self.sign * self.heap[0] if self.heap else None

    def take(self, price: int, ref: int, shares: int) -> int:
        """Remove up to `shares` from order ref; return what is left of it."""
        q = self.levels[price]
        left = q[ref] - shares
        if left > 0:
            q[ref] = left
        else:
            del q[ref]
            if not q:
                del self.levels[price]
        return left


class _Book:
    """A symbol's simulated book: a crossing add trades with the touch, as on the exchange."""

    def __init__(self):
        self.sides = {b"B": _Side(True), b"S": _Side(False)}
        self.orders: dict[int, tuple[bytes, int]] = {}  # ref -> (side, price)
        self.refs: list[int] = []  # for a uniform random pick of a live order

    def pick(self, r: float) -> int:
        while True:  # drop refs of orders already gone, lazily
            i = int(r * len(self.refs))
            ref = self.refs[i]
            if ref in self.orders:
                return ref
            self.refs[i] = self.refs[-1]
            self.refs.pop()

    def rest(self, ref: int, side: bytes, price: int, shares: int) -> None:
        self.sides[side].add(price, ref, shares)
        self.orders[ref] = (side, price)
        self.refs.append(ref)

    def reduce(self, ref: int, shares: int) -> None:
        side, price = self.orders[ref]
        if self.sides[side].take(price, ref, shares) <= 0:
            del self.orders[ref]

    def shares(self, ref: int) -> int:
        side, price = self.orders[ref]
        return self.sides[side].levels[price][ref]

    def front(self, side: bytes) -> int | None:
        """The order first in time priority at the best price of `side`."""
        p = self.sides[side].best()
        return None if p is None else next(iter(self.sides[side].levels[p]))


def simulate(syms=DEFAULT_SYMS, messages: int = 100_000, seed: int = 0, progress=None) -> bytes:
    """The bytes of a simulated day of about `messages` messages. `progress(k)` (e.g. a tqdm's
    update) is told every 10,000 simulated messages."""
    syms = list(syms)
    if not syms:
        raise ValueError("need at least one symbol")
    rng = np.random.default_rng(seed)
    tape = _Tape()
    mids = np.round(rng.uniform(10, 500, len(syms)), 2)
    tape.add("S", 0, 3 * HOUR, b"O")
    tape.add("S", 0, 4 * HOUR, b"S")
    _directory(tape, syms, 4 * HOUR + 1000)
    _others(tape, syms, mids, 5 * HOUR)
    tape.add("S", 0, OPEN - 1, b"Q")

    budget = max(messages - len(tape.order) - len(syms) - 3, 0)  # the close adds the rest
    stop = len(tape.order) + budget
    times = np.sort(rng.integers(OPEN, CLOSE, budget)).tolist()
    which = rng.integers(0, len(syms), budget).tolist()
    act = rng.random(budget).tolist()
    u = rng.random((budget, 3)).tolist()
    steps = rng.choice([-1, 0, 0, 0, 0, 0, 1], budget).tolist()
    books = [_Book() for _ in syms]
    tick = [max(1, int(m) // 100) * 100 for m in mids]  # 1 cent, 2 above $200, ...
    mid = [int(m * 1e4) // t * t for m, t in zip(mids, tick)]
    next_ref, match = 1, 1
    matches: list[tuple[int, int]] = []  # (locate, match) of prints that could be broken
    for i in range(budget):
        if len(tape.order) >= stop:  # an add that trades writes several messages
            break
        if progress is not None and i % 10_000 == 0 and i:
            progress(10_000)
        k, ns, a = which[i], times[i], act[i]
        loc, s8, book = k + 1, _pad(syms[k], 8), books[k]
        mid[k] = max(mid[k] + steps[i] * tick[k], 20 * tick[k])
        r1, r2, r3 = u[i]
        if a < 0.45 or not book.orders:
            side = b"B" if r1 < 0.5 else b"S"
            other = b"S" if side == b"B" else b"B"
            away = int(r2 * r2 * 6) * tick[k]  # most liquidity near the touch
            price = max(mid[k] - away if side == b"B" else mid[k] + away, tick[k])
            shares = 100 * (1 + int(r3 * 10))
            while shares > 0:  # a marketable order trades with the resting touch first
                ref = book.front(other)
                if ref is None:
                    break
                rp = book.orders[ref][1]
                if (rp > price) if side == b"B" else (rp < price):
                    break
                ex = min(shares, book.shares(ref))
                tape.add("E", loc, ns, ref, ex, match)
                matches.append((loc, match))
                match += 1
                book.reduce(ref, ex)
                shares -= ex
            if shares > 0:
                if a < 0.36:
                    tape.add("A", loc, ns, next_ref, side, shares, s8, price)
                else:
                    tape.add("F", loc, ns, next_ref, side, shares, s8, price,
                             b"GSCO" if r3 < 0.5 else b"MSCO")
                book.rest(next_ref, side, price, shares)
                next_ref += 1
            continue
        if a < 0.57:  # a market order: executes the front of the touch
            ref = book.front(b"B" if r1 < 0.5 else b"S") or book.pick(r1)
            ex = min(book.shares(ref), 100 * (1 + int(r2 * 5)))
            tape.add("E", loc, ns, ref, ex, match)
            matches.append((loc, match))
            match += 1
            book.reduce(ref, ex)
            continue
        ref = book.pick(r1)
        side, price = book.orders[ref]
        shares = book.shares(ref)
        if a < 0.60:  # executed at another price (e.g. a cross); sometimes not printable
            ex = min(shares, 100)
            px = price + (tick[k] if r3 < 0.5 else 0)  # e.g. filled in a cross at a better price
            tape.add("C", loc, ns, ref, ex, match, b"Y" if r2 < 0.8 else b"N", px)
            match += 1
            book.reduce(ref, ex)
        elif a < 0.70:
            cx = max(int(r2 * shares), 1)
            tape.add("X", loc, ns, ref, cx)
            book.reduce(ref, cx)
        elif a < 0.88:
            tape.add("D", loc, ns, ref)
            book.reduce(ref, shares)
        elif a < 0.96:  # replace: one tick away, never crossing the other side
            np_ = max(price + tick[k] * (1 if r2 < 0.5 else -1), tick[k])
            opp = book.sides[b"S" if side == b"B" else b"B"].best()
            if opp is not None and ((np_ >= opp) if side == b"B" else (np_ <= opp)):
                np_ = price
            nsh = 100 * (1 + int(r3 * 10))
            tape.add("U", loc, ns, ref, next_ref, nsh, np_)
            book.reduce(ref, shares)
            book.rest(next_ref, side, np_, nsh)
            next_ref += 1
        elif a < 0.985:  # a hidden (non-displayed) order traded
            tape.add("P", loc, ns, 0, b"B" if r2 < 0.5 else b"S", 100 * (1 + int(r3 * 3)), s8,
                     mid[k], match)
            matches.append((loc, match))
            match += 1
        elif a < 0.995:
            tape.add("I", loc, ns, 10_000, int(r2 * 5000), b"B" if r3 < 0.5 else b"S", s8,
                     mid[k] + tick[k], mid[k], mid[k], b"C", b"L")
        elif matches:
            bl, bm = matches.pop(int(r2 * len(matches)))
            tape.add("B", bl, ns, bm)
    for loc, s in enumerate(syms, 1):  # the closing cross
        tape.add("Q", loc, CLOSE, 50_000, _pad(s, 8), mid[loc - 1], match, b"C")
        match += 1
    tape.add("S", 0, CLOSE, b"M")
    tape.add("S", 0, 20 * HOUR, b"E")
    tape.add("S", 0, 20 * HOUR + 5 * 60 * NS, b"C")
    return tape.to_bytes()


def write_itch(path: str | os.PathLike, syms=DEFAULT_SYMS, messages: int = 100_000,
               seed: int = 0, progress=None) -> int:
    """Write a simulated ITCH 5.0 FILE of about `messages` messages; return its size in bytes."""
    data = simulate(syms, messages, seed, progress)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
