"""python -m rdb [--config FILE] [--home DIR]: the real-time database process."""
from rdb.config import RdbConfig
from rdb.rdb import Rdb
from schemas.process import serve
from tickerplant.health import monitor

if __name__ == "__main__":
    serve("rdb", RdbConfig, Rdb.from_config, monitor=monitor("rdb"))
