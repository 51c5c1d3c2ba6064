"""HTTP: the FastAPI app, its routes, and streaming request/response handling."""

from tfstorage.api.app import create_app

__all__ = ["create_app"]
