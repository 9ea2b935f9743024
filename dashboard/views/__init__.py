"""The dashboard's blueprints: each area's pages and its part of the JSON API (/api/v1)."""
