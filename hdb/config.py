"""HDB and QuestDB-sink settings; the defaults here are the only ones."""
from pydantic import Field

from ops.settings import Settings


class QuestDBSettings(Settings):
    enabled: bool = False
    ilp: str = "http::addr=127.0.0.1:9000;"   # questdb client conf string (ILP over HTTP)
    pg: str = "host=127.0.0.1 port=8812 user=admin password=quest dbname=qdb"
    retries: int = Field(3, ge=0)


class HdbSettings(Settings):
    query: str = "tcp://127.0.0.1:5030"    # REP: read-only SQL over history
    query_timeout_s: float = Field(300.0, gt=0)
    max_rows: int = Field(1_000_000, ge=1)
    questdb: QuestDBSettings = QuestDBSettings()
