"""The FIX order gateway, pre-trade risk and venue simulator (trading-path issue)."""
