"""The collector the pages read, set by ``create_app``; and the domain-id check they share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain_mlflow.naming import validate_domain_id

if TYPE_CHECKING:
    from domain_mlflow.metrics.collector import DomainMetricsCollector

_collector: DomainMetricsCollector | None = None


def set_collector(collector: DomainMetricsCollector) -> None:
    """Make ``collector`` the one every page reads (one dashboard per process)."""
    global _collector
    _collector = collector


def get_collector() -> DomainMetricsCollector:
    """The collector given to ``create_app``."""
    if _collector is None:
        raise RuntimeError("the dashboard has no metrics collector: build it with "
                           "dash_app.app.create_app(collector)")
    return _collector


def is_known_domain(collector: DomainMetricsCollector, domain_id: str,
                    days: int | None = None) -> bool:
    """Whether ``domain_id`` has runs, versions or a config in the window.

    Raises ``InvalidDomainIdError`` when it is not a valid domain id at all.
    """
    validate_domain_id(domain_id)
    return domain_id in collector.domain_ids(days)
