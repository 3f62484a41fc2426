"""Base for every config section: typed, frozen, unknown keys rejected.

Each package owns its section (defaults live in that class and nowhere else); ops/config.py
composes them into the one Config a process receives.
"""
from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
