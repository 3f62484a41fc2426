"""The real-time database: today in memory, SQL over it, EOD hand-off."""
