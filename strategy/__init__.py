"""Strategies and the risk subscriber (trading-path issue)."""
