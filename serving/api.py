"""Transitional: the management API moved to :mod:`serving.management.main`."""

from serving.management.main import app, create_app

__all__ = ["app", "create_app"]
