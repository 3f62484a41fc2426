"""NASDAQ TotalView-ITCH 5.0: spec dtypes, a vectorized parser, top-of-book rebuild, a file writer."""
