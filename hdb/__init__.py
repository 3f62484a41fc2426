"""History: the EOD writer (Parquet, QuestDB), the DuckDB query layer, the HDB process."""
