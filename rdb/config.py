"""RDB settings; the defaults here are the only ones."""
from pydantic import Field

from hdb.config import HdbSettings
from schemas.settings import Settings, StackSettings
from tickerplant.config import CurveSettings, EodSettings, HealthSettings, TickerplantSettings


class RdbSettings(Settings):
    query: str = "tcp://127.0.0.1:5020"    # ROUTER (clients speak REQ): read-only SQL over today's data
    max_request_bytes: int = Field(16 << 20, ge=1024)  # a request frame over this: ZeroMQ drops the peer
    tables: tuple[str, ...] = ()           # empty = every table
    chunk_rows: int = Field(1 << 18, ge=1024)
    query_timeout_s: float = Field(60.0, gt=0)
    max_rows: int = Field(1_000_000, ge=1)


class RdbConfig(StackSettings):
    """What `python -m rdb` reads: its own section, the TP's endpoints, the day rule, and the
    history's sinks (the RDB writes the day at its end)."""
    tickerplant: TickerplantSettings = TickerplantSettings()
    eod: EodSettings = EodSettings()
    rdb: RdbSettings = RdbSettings()
    hdb: HdbSettings = HdbSettings()
    health: HealthSettings = HealthSettings()
    curve: CurveSettings = CurveSettings()
