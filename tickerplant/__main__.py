"""python -m tickerplant [--config FILE] [--home DIR]: the tickerplant process."""
from schemas.process import serve
from tickerplant.config import TickerplantConfig
from tickerplant.health import monitor
from tickerplant.tp import Tickerplant

if __name__ == "__main__":
    serve("tickerplant", TickerplantConfig, Tickerplant.from_config, monitor=monitor("tp"))
