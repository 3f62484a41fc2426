"""The risk process and its libraries: `book` (positions, PnL, exposure), `var` (historical
VaR/ES), `limits` (breaches, flattening children), `process` (RiskProcess), `config`
(`[risk]`). Run it with `python -m strategy.risk`."""
