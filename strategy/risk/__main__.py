"""`python -m strategy.risk [--config FILE] [--home DIR]`: the risk process (strategy.risk.process)."""
from schemas.process import serve
from strategy.risk.config import RiskConfig
from strategy.risk.process import RiskProcess
from tickerplant.health import monitor

if __name__ == "__main__":
    serve("risk", RiskConfig, RiskProcess.from_config, monitor=monitor("risk"))
