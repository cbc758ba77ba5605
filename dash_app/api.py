"""Read-only JSON routes on the dashboard's Flask server.

``GET /api/metrics[?days=N]`` (with the fleet's rates and approval queue),
``GET /api/metrics?domain_id=ID[&days=N]``,
``GET /api/domains/<ID>/history`` and ``GET /healthz``. Bad input is a 400, an unknown
domain a 404, another method a 405; every answer is JSON. Without a config store the
metrics answer 200 with ``store_note`` set: nothing is created to answer.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, request
from mlflow.exceptions import MlflowException
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from dash_app.state import is_known_domain
from domain_mlflow.exceptions import InvalidDomainIdError
from domain_mlflow.naming import utc_now
from domain_mlflow.redaction import redact

if TYPE_CHECKING:
    from domain_mlflow.metrics.collector import DomainMetricsCollector

MAX_DAYS = 3650
_DAYS = re.compile(r"[0-9]{1,4}")


class ApiError(Exception):
    """A request the API answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so the JSON stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(_finite(data), default=str), status=status,
                    mimetype="application/json")


def _query(allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each given at most once and all of them in ``allowed``."""
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "none"
        raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}; "
                            f"allowed: {expected}")
    repeated = [name for name in request.args if len(request.args.getlist(name)) > 1]
    if repeated:
        raise ApiError(400, f"query parameter {repeated[0]!r} is given more than once")
    return dict(request.args)


def _days(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not _DAYS.fullmatch(raw) or not 1 <= int(raw) <= MAX_DAYS:
        raise ApiError(400, f"days={raw[:20]!r} is not valid: it must be a whole number "
                            f"between 1 and {MAX_DAYS}")
    return int(raw)


def _known(collector: DomainMetricsCollector, domain_id: str, days: int | None) -> str:
    try:
        known = is_known_domain(collector, domain_id, days)
    except InvalidDomainIdError as error:
        raise ApiError(400, str(error)) from error
    if not known:
        raise ApiError(404, f"unknown domain {domain_id!r}: it has no runs in the last "
                            f"{days or collector.settings.metrics_time_window_days} days, "
                            "no registered model and no config")
    return domain_id


def api_blueprint(collector: DomainMetricsCollector) -> Blueprint:
    """The API's routes, reading ``collector``."""
    api = Blueprint("domain_api", __name__)

    @api.get("/api/metrics")
    def metrics() -> Response:
        params = _query(("domain_id", "days"))
        days = _days(params.get("days"))
        if "domain_id" in params:
            domain_id = _known(collector, params["domain_id"], days)
            return json_response(collector.collect_domain_metrics(domain_id, days))
        return json_response({
            "generated_at": utc_now().isoformat(),
            "time_window_days": days or collector.settings.metrics_time_window_days,
            "domains": [collector.domain_summary(d, days) for d in collector.domain_ids(days)],
            "deployments": collector.fleet_deployments(days),
            **collector.store_status(days),
        })

    @api.get("/api/domains/<path:domain_id>/history")
    def history(domain_id: str) -> Response:
        _query(())
        _known(collector, domain_id, None)
        return json_response({
            "domain_id": domain_id,
            "history": collector.domain_history(domain_id),
            "versions": collector.collect_domain_metrics(domain_id)["versions"],
        })

    @api.get("/healthz")
    def healthz() -> Response:
        _query(())
        return json_response({"status": "ok"})

    @api.get("/api/<path:rest>")
    def not_found(rest: str) -> Response:
        return json_response({"error": f"no API route /api/{rest}"}, 404)

    @api.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return json_response({"error": error.message}, error.status)

    @api.errorhandler(MlflowException)
    def store_error(error: MlflowException) -> Response:
        return json_response(
            {"error": redact(f"the MLflow tracking store failed: {error.message}")}, 503)

    return api


def _is_api_path(path: str) -> bool:
    return path == "/healthz" or path.startswith("/api/")


def register_api(server: Flask, collector: DomainMetricsCollector) -> None:
    """Add the API to ``server``; a wrong method on an API path answers JSON too."""
    server.register_blueprint(api_blueprint(collector))

    def method_not_allowed(error: MethodNotAllowed) -> Response | HTTPException:
        if not _is_api_path(request.path):
            return error
        response = json_response({"error": f"{request.method} is not allowed on "
                                           f"{request.path}; use GET"}, 405)
        response.headers["Allow"] = ", ".join(error.valid_methods or ["GET", "HEAD"])
        return response

    server.register_error_handler(MethodNotAllowed, method_not_allowed)
