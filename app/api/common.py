"""Request parsing shared by the blueprints."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from marshmallow import Schema, ValidationError

from ..errors import InvalidRequest


def json_body(required: bool = True) -> Any:
    """Return the parsed JSON body; an absent optional body is ``{}``."""
    data = request.get_data(cache=True)
    if not data.strip():
        if required:
            raise InvalidRequest(
                "Request body is missing. Send a JSON object.",
                {"body": ["Missing JSON body."]},
            )
        return {}

    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        raise InvalidRequest(
            "Request body is not valid JSON.", {"body": [f"Not valid JSON: {error}."]}
        ) from None


def load(schema: Schema, body: Any) -> dict[str, Any]:
    """Validate ``body`` with ``schema``; every broken rule is named per field."""
    if not isinstance(body, dict):
        raise InvalidRequest(
            "Invalid request body",
            {"body": [f"Must be a JSON object, not {_json_type(body)}."]},
        )
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ValidationError as error:
        raise InvalidRequest("Invalid request body", _flatten(error.messages)) from None
    return loaded


def load_query(schema: Schema) -> dict[str, Any]:
    """Validate the query string with ``schema``."""
    try:
        loaded: dict[str, Any] = schema.load(request.args.to_dict())
    except ValidationError as error:
        raise InvalidRequest("Invalid query parameters", _flatten(error.messages)) from None
    return loaded


def _flatten(messages: Any) -> dict[str, list[str]]:
    if isinstance(messages, dict):
        return {
            str(key): value if isinstance(value, list) else [str(value)]
            for key, value in messages.items()
        }
    return {"body": [str(message) for message in messages]}


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "a string"
