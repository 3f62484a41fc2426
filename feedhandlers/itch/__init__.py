"""NASDAQ TotalView-ITCH 5.0: spec dtypes, a vectorized parser, top-of-book rebuild, a file writer.

The calls a feed process needs, importable from here:
    parse(buf) -> Parsed                         every message, by type, in file order
    itch_tables(path_or_buf, date)               {"quote": cols, "trade": cols} of a whole file
    iter_itch_batches(path, date, batch_messages=1_000_000, errors=None)
                                                 ("quote" | "trade", cols) chunks, file order
    write_itch(path, syms=..., messages=..., seed=...)   a simulated, spec-conformant file
"""
from feedhandlers.itch.book import itch_tables, iter_itch_batches
from feedhandlers.itch.parser import ItchError, Parsed, parse, parse_file
from feedhandlers.itch.writer import write_itch

__all__ = ["ItchError", "Parsed", "itch_tables", "iter_itch_batches", "parse", "parse_file",
           "write_itch"]
