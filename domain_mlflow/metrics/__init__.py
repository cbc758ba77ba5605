"""Metrics: the collector over the MLflow tracking store, and serving telemetry."""
