"""`python -m gateway [--config FILE] [--home DIR]`: the order gateway process (gateway.gateway)."""
from gateway.config import GatewayConfig
from gateway.gateway import Gateway
from schemas.process import serve
from tickerplant.health import monitor

if __name__ == "__main__":
    serve("gateway", GatewayConfig, Gateway.from_config, monitor=monitor("gateway"))
