"""The routers, one module per group of routes."""

from tfstorage.api.routes import convertors as convertors
