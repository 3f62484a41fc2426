"""RDB settings; the defaults here are the only ones."""
from pydantic import Field

from schemas.settings import Settings


class RdbSettings(Settings):
    query: str = "tcp://127.0.0.1:5020"    # REP: read-only SQL over today's data
    tables: tuple[str, ...] = ()           # empty = every table
    chunk_rows: int = Field(1 << 18, ge=1024)
    query_timeout_s: float = Field(60.0, gt=0)
    max_rows: int = Field(1_000_000, ge=1)
