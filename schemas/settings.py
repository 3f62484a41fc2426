"""Base for every config section: typed, frozen, unknown keys rejected.

It lives in the bottom layer so every package can declare its own section without importing
`ops`; each section's defaults live in that class and nowhere else, and `ops` composes them.
"""
from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
