"""The tickerplant: ingest, log, publish; its log format and the subscriber client."""
