"""Who is calling: resolved once per request by the API's single caller dependency."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    # Until access control lands, every caller is anonymous with full rights.
    scopes: frozenset[str] = frozenset({"read", "write", "delete", "admin"})

    @classmethod
    def anonymous(cls) -> Caller:
        return cls(name="anonymous")
