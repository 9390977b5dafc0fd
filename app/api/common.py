"""Request parsing shared by the blueprints."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import request
from marshmallow import Schema, ValidationError

from ..dcmtk import DcmtkError
from ..errors import InvalidRequest, ServiceError


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


logger = logging.getLogger(__name__)

# Batch create routes run one dump2dcm per item within a single request.
MAX_BATCH_ITEMS = 1000


def run_batch(
    wrapper_key: str,
    kind: str,
    schema: type[Schema],
    create: Callable[[dict[str, Any]], dict[str, Any]],
    created_message: str,
) -> dict[str, Any]:
    """Validate and create each item of a batch body, and count the outcomes.

    The body is a JSON array, or an object whose ``wrapper_key`` contains
    the array. Each item gets an envelope of its own, so a bad item does not
    stop the others.
    """
    items = json_body()
    if isinstance(items, dict) and isinstance(items.get(wrapper_key), list):
        items = items[wrapper_key]
    if not isinstance(items, list):
        raise InvalidRequest(
            "Invalid request body",
            {"body": [f'Must be a JSON array of {kind} bodies, or {{"{wrapper_key}": [...]}}.']},
        )
    if len(items) > MAX_BATCH_ITEMS:
        raise InvalidRequest(
            "Invalid request body",
            {
                "body": [
                    f"At most {MAX_BATCH_ITEMS} items per batch, got {len(items)}. "
                    "Split the batch into several requests."
                ]
            },
        )

    results = [_batch_item(item, schema, create, created_message) for item in items]
    succeeded = sum(1 for result in results if result["success"])
    return {
        "total": len(results),
        "succeeded": succeeded,
        "failed": len(results) - succeeded,
        "results": results,
    }


def _batch_item(
    item: Any,
    schema: type[Schema],
    create: Callable[[dict[str, Any]], dict[str, Any]],
    created_message: str,
) -> dict[str, Any]:
    try:
        return {"success": True, "message": created_message, "data": create(load(schema(), item))}
    except ServiceError as error:
        result: dict[str, Any] = {"success": False, "message": error.message, "data": None}
        if error.errors is not None:
            result["errors"] = error.errors
        return result
    except DcmtkError as error:
        logger.error("Batch item failed: %s", error.message)
        return {"success": False, "message": error.message, "data": None}


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
