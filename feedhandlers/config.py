"""Feed settings; the defaults here are the only ones."""
from pydantic import Field

from ops.settings import Settings


class FeedSettings(Settings):
    syms: int = Field(20, ge=1)            # simulator: number of symbols
    rate: float = Field(1000.0, gt=0)      # simulator: ticks per second
    seed: int = 42
