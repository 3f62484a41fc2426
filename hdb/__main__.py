"""python -m hdb [--config FILE] [--home DIR]: the history query process."""
from hdb.config import HdbConfig
from hdb.hdb import Hdb
from schemas.process import serve
from tickerplant.health import monitor

if __name__ == "__main__":
    serve("hdb", HdbConfig, Hdb.from_config, monitor=monitor("hdb"))
