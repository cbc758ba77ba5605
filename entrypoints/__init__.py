"""Thin scripts behind the MLproject entry points."""
