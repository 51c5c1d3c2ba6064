"""The metadata index: SQLAlchemy tables, queries and Alembic migrations."""

from __future__ import annotations

from tfstorage.index.engine import create_index_engine, migrate
from tfstorage.index.object_index import ObjectIndex

__all__ = ["ObjectIndex", "create_index_engine", "migrate"]
