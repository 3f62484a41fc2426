"""NASDAQ TotalView-ITCH 5.0 message layouts as numpy structured dtypes.

One packed, big-endian dtype per message type, field for field as in the specification
(section 1.3-1.9). Every message starts with the same 11 bytes: type (1), stock locate (2),
tracking number (2) and a 6-byte big-endian timestamp in ns since midnight (US/Eastern).
numpy has no 6-byte integer, so the timestamp is kept as its two big-endian parts
`ts_hi` (u2, the high 16 bits) and `ts_lo` (u4, the low 32 bits): the bytes are exactly the
wire bytes, and `timestamps()` joins them. Prices are u4 fixed point with 4 decimals
(`Price(4)`), except the MWCB levels which are u8 with 8 decimals (`Price(8)`).
Alpha fields are fixed-width ASCII, left-justified and padded with spaces.

Files are NASDAQ's binary FILE format: every message is preceded by its 2-byte big-endian
length (`FRAME`).
"""
from __future__ import annotations

import numpy as np

FRAME = np.dtype(">u2")  # the length prefix of every message in a file

HEADER = [("type", "S1"), ("stock_locate", ">u2"), ("tracking_number", ">u2"),
          ("ts_hi", ">u2"), ("ts_lo", ">u4")]

# type letter -> (name, fields after the common header)
_BODIES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "S": ("system_event", [("event_code", "S1")]),
    "R": ("stock_directory", [
        ("stock", "S8"), ("market_category", "S1"), ("financial_status_indicator", "S1"),
        ("round_lot_size", ">u4"), ("round_lots_only", "S1"), ("issue_classification", "S1"),
        ("issue_subtype", "S2"), ("authenticity", "S1"), ("short_sale_threshold_indicator", "S1"),
        ("ipo_flag", "S1"), ("luld_reference_price_tier", "S1"), ("etp_flag", "S1"),
        ("etp_leverage_factor", ">u4"), ("inverse_indicator", "S1")]),
    "H": ("stock_trading_action", [
        ("stock", "S8"), ("trading_state", "S1"), ("reserved", "S1"), ("reason", "S4")]),
    "Y": ("reg_sho_restriction", [("stock", "S8"), ("reg_sho_action", "S1")]),
    "L": ("market_participant_position", [
        ("mpid", "S4"), ("stock", "S8"), ("primary_market_maker", "S1"),
        ("market_maker_mode", "S1"), ("market_participant_state", "S1")]),
    "V": ("mwcb_decline_level", [("level1", ">u8"), ("level2", ">u8"), ("level3", ">u8")]),
    "W": ("mwcb_status", [("breached_level", "S1")]),
    "K": ("ipo_quoting_period_update", [
        ("stock", "S8"), ("ipo_quotation_release_time", ">u4"),
        ("ipo_quotation_release_qualifier", "S1"), ("ipo_price", ">u4")]),
    "J": ("luld_auction_collar", [
        ("stock", "S8"), ("auction_collar_reference_price", ">u4"),
        ("upper_auction_collar_price", ">u4"), ("lower_auction_collar_price", ">u4"),
        ("auction_collar_extension", ">u4")]),
    "h": ("operational_halt", [
        ("stock", "S8"), ("market_code", "S1"), ("operational_halt_action", "S1")]),
    "A": ("add_order", [
        ("order_reference_number", ">u8"), ("buy_sell_indicator", "S1"), ("shares", ">u4"),
        ("stock", "S8"), ("price", ">u4")]),
    "F": ("add_order_mpid", [
        ("order_reference_number", ">u8"), ("buy_sell_indicator", "S1"), ("shares", ">u4"),
        ("stock", "S8"), ("price", ">u4"), ("attribution", "S4")]),
    "E": ("order_executed", [
        ("order_reference_number", ">u8"), ("executed_shares", ">u4"), ("match_number", ">u8")]),
    "C": ("order_executed_with_price", [
        ("order_reference_number", ">u8"), ("executed_shares", ">u4"), ("match_number", ">u8"),
        ("printable", "S1"), ("execution_price", ">u4")]),
    "X": ("order_cancel", [("order_reference_number", ">u8"), ("cancelled_shares", ">u4")]),
    "D": ("order_delete", [("order_reference_number", ">u8")]),
    "U": ("order_replace", [
        ("original_order_reference_number", ">u8"), ("new_order_reference_number", ">u8"),
        ("shares", ">u4"), ("price", ">u4")]),
    "P": ("trade", [
        ("order_reference_number", ">u8"), ("buy_sell_indicator", "S1"), ("shares", ">u4"),
        ("stock", "S8"), ("price", ">u4"), ("match_number", ">u8")]),
    "Q": ("cross_trade", [
        ("shares", ">u8"), ("stock", "S8"), ("cross_price", ">u4"), ("match_number", ">u8"),
        ("cross_type", "S1")]),
    "B": ("broken_trade", [("match_number", ">u8")]),
    "I": ("noii", [
        ("paired_shares", ">u8"), ("imbalance_shares", ">u8"), ("imbalance_direction", "S1"),
        ("stock", "S8"), ("far_price", ">u4"), ("near_price", ">u4"),
        ("current_reference_price", ">u4"), ("cross_type", "S1"),
        ("price_variation_indicator", "S1")]),
    "N": ("rpii", [("stock", "S8"), ("interest_flag", "S1")]),
    "O": ("dlcr", [
        ("stock", "S8"), ("open_eligibility_status", "S1"), ("minimum_allowable_price", ">u4"),
        ("maximum_allowable_price", ">u4"), ("near_execution_price", ">u4"),
        ("near_execution_time", ">u8"), ("lower_price_range_collar", ">u4"),
        ("upper_price_range_collar", ">u4")]),
}

# Message length (without the 2-byte frame) per the specification; checked at import below.
SIZES: dict[str, int] = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21,
    "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19,
    "I": 50, "N": 20, "O": 48,
}

DTYPES: dict[str, np.dtype] = {t: np.dtype(HEADER + body) for t, (_, body) in _BODIES.items()}
NAMES: dict[str, str] = {t: name for t, (name, _) in _BODIES.items()}
TYPES: tuple[str, ...] = tuple(DTYPES)

# Fields holding Price(4) / Price(8) values, for conversion to float.
PRICE_FIELDS: dict[str, tuple[str, ...]] = {
    "K": ("ipo_price",),
    "J": ("auction_collar_reference_price", "upper_auction_collar_price",
          "lower_auction_collar_price"),
    "A": ("price",), "F": ("price",), "C": ("execution_price",), "U": ("price",),
    "P": ("price",), "Q": ("cross_price",),
    "I": ("far_price", "near_price", "current_reference_price"),
    "O": ("minimum_allowable_price", "maximum_allowable_price", "near_execution_price",
          "lower_price_range_collar", "upper_price_range_collar"),
    "V": ("level1", "level2", "level3"),
}
PRICE_SCALE: dict[str, float] = {t: (1e8 if t == "V" else 1e4) for t in PRICE_FIELDS}

# Type byte -> message length, 0 for an unknown type: the parser's one lookup table.
SIZE_BY_BYTE = np.zeros(256, dtype=np.int16)
for _t, _n in SIZES.items():
    SIZE_BY_BYTE[ord(_t)] = _n

for _t, _dt in DTYPES.items():  # a layout typo must fail at import, not in a parse
    if _dt.itemsize != SIZES[_t]:
        raise AssertionError(f"ITCH {_t}: dtype is {_dt.itemsize} bytes, spec says {SIZES[_t]}")


def timestamps(records: np.ndarray) -> np.ndarray:
    """ns since midnight (uint64) of any ITCH structured array, from its two timestamp parts."""
    return (records["ts_hi"].astype(np.uint64) << np.uint64(32)) | records["ts_lo"].astype(np.uint64)


def split_timestamps(ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ts_hi, ts_lo) for ns since midnight: the inverse of `timestamps`."""
    ns = np.asarray(ns, dtype=np.uint64)
    return (ns >> np.uint64(32)).astype(np.uint16), (ns & np.uint64(0xFFFFFFFF)).astype(np.uint32)
