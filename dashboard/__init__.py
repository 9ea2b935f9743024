"""Read-only web dashboard over a node's ledger: ``create_app(data_dir)`` (docs/dashboard.md)."""

from dashboard.app import create_app

__all__ = ["create_app"]
