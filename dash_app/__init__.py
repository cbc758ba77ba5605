"""The Dash dashboard: per-domain metrics, rankings and comparisons, and a JSON API.

``create_app(collector)`` (in :mod:`dash_app.app`) builds it; ``python -m dash_app``
serves it.
"""
