"""The JSON envelope that every response carries: ``success``, ``message``, ``data``."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


def success(data: Any, message: str, status: int = 200) -> tuple[Response, int]:
    """Build a success envelope with the payload under ``data``."""
    return jsonify({"success": True, "message": message, "data": data}), status


def failure(
    message: str, status: int, errors: dict[str, list[str]] | None = None
) -> tuple[Response, int]:
    """Build a failure envelope; ``errors`` maps each invalid field to its messages."""
    body: dict[str, Any] = {"success": False, "message": message, "data": None}
    if errors is not None:
        body["errors"] = errors
    return jsonify(body), status

