"""python -m tickerplant [--config FILE] [--home DIR]: the tickerplant process."""
from ops.process import serve
from tickerplant.tp import Tickerplant

if __name__ == "__main__":
    serve("tickerplant", Tickerplant)
