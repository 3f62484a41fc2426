"""HDB and QuestDB-sink settings; the defaults here are the only ones."""
from pydantic import Field

from schemas.settings import Settings, StackSettings
from tickerplant.config import CurveSettings, EodSettings, HealthSettings, TickerplantSettings


class QuestDBSettings(Settings):
    enabled: bool = False
    ilp: str = "http::addr=127.0.0.1:9000;"   # questdb client conf string (ILP over HTTP)
    pg: str = "host=127.0.0.1 port=8812 user=admin password=quest dbname=qdb"
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(1.0, ge=0)       # first retry wait; doubles each attempt
    chunk_rows: int = Field(500_000, ge=1)    # rows per ILP/HTTP request (one transaction each)
    timestamp_type: str = "TIMESTAMP_NS"      # QuestDB >= 9.1; "TIMESTAMP" (micros) for older


class HdbSettings(Settings):
    query: str = "tcp://127.0.0.1:5030"    # ROUTER (clients speak REQ): read-only SQL over history
    max_request_bytes: int = Field(16 << 20, ge=1024)  # a request frame over this: ZeroMQ drops the peer
    query_timeout_s: float = Field(300.0, gt=0)
    max_rows: int = Field(1_000_000, ge=1)
    workers: int = Field(2, ge=1)          # queries served at once
    questdb: QuestDBSettings = QuestDBSettings()


class HdbConfig(StackSettings):
    """What `python -m hdb` reads (the TP's endpoints: only for its heartbeats)."""
    eod: EodSettings = EodSettings()
    hdb: HdbSettings = HdbSettings()
    tickerplant: TickerplantSettings = TickerplantSettings()
    health: HealthSettings = HealthSettings()
    curve: CurveSettings = CurveSettings()
