"""Dash's own routes answer a malformed request with a 4xx, never a 500.

``POST /_dash-update-component`` hands its JSON body straight to Dash, which
indexes into it (``body["output"]``, ``body.get("inputs")``): a body that is not
JSON, not an object, without ``output`` or with values of the wrong type raised
``KeyError``/``AttributeError``/``TypeError`` and answered 500. The body's shape is
checked before Dash sees it, and an error a body that passed still provokes while
Dash unpacks it is a 400 as well. ``/_dash-component-suites/`` answered 500 for a
library it does not know; that is a 404. Every such answer is ``{"error": reason}``.
"""

from __future__ import annotations

import logging
from typing import Any

from dash.exceptions import DashException, DependencyException
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from dash_app.api import json_response

_log = logging.getLogger(__name__)

CALLBACK_PATH = "/_dash-update-component"
# What Dash raises while it unpacks a body of the right shape with the wrong contents.
_MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, DashException)


def _is_callback_request() -> bool:
    return request.method == "POST" and request.path.endswith(CALLBACK_PATH)


def _is_dash_route() -> bool:
    return "/_dash-" in request.path


def _list_of(body: dict[str, Any], key: str, kinds: tuple[type, ...]) -> str | None:
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, list) or not all(isinstance(item, kinds) for item in value):
        names = " or ".join(kind.__name__.replace("dict", "object") for kind in kinds)
        return f"{key!r} must be a list of {names}"
    return None


def callback_body_problem(body: Any, known_outputs: Any) -> str | None:
    """Why ``body`` is not a callback request Dash can answer; None when it is one."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    output = body.get("output")
    if not isinstance(output, str) or not output:
        return "'output' must be a string naming a callback's outputs"
    if output not in known_outputs:
        return f"no callback has the outputs {output[:200]!r}"
    if "outputs" in body and not isinstance(body["outputs"], dict | list):
        return "'outputs' must be an object or a list"
    for key, kinds in (("inputs", (dict, list)), ("state", (dict, list)),
                       ("changedPropIds", (str,))):
        problem = _list_of(body, key, kinds)
        if problem:
            return problem
    return None


def register_request_errors(server: Flask, known_outputs: Any) -> None:
    """Check callback requests on ``server``; ``known_outputs``: the app's callback map."""

    @server.before_request
    def check_callback_body() -> Response | None:
        if not _is_callback_request():
            return None
        body = request.get_json(silent=True)
        problem = callback_body_problem(body, known_outputs)
        return None if problem is None else json_response({"error": problem}, 400)

    def malformed(error: Exception) -> Response | HTTPException:
        if isinstance(error, HTTPException):
            if _is_callback_request() and 400 <= (error.code or 500) < 500:
                return json_response({"error": error.description}, error.code or 400)
            return error
        if not (_is_dash_route() and isinstance(error, _MALFORMED)):
            raise error  # a real fault: Flask logs it and answers 500
        if isinstance(error, DependencyException):
            return json_response({"error": f"no such Dash resource: {request.path}"}, 404)
        _log.warning("malformed request to %s: %s: %s", request.path, type(error).__name__,
                     error)
        return json_response({"error": "the request does not match the dashboard's "
                                       f"callbacks ({type(error).__name__})"}, 400)

    server.register_error_handler(Exception, malformed)
