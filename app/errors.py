"""Domain exceptions and the one handler that turns them into JSON envelopes."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from .dcmtk import DcmtkError, DcmtkNotFound
from .responses import failure

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with an HTTP status and a message meant for the client."""

    status = 500

    def __init__(
        self, message: str, errors: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class InvalidRequest(ServiceError):
    """The request body, query or path broke a rule; ``errors`` names each field."""

    status = 400


class Unauthorized(ServiceError):
    """The bearer token is missing or wrong."""

    status = 401


class NotFound(ServiceError):
    """An instance or worklist entry that does not exist."""

    status = 404


class PacsError(ServiceError):
    """The PACS rejected the request or could not be reached."""

    status = 502


class Unavailable(ServiceError):
    """A required tool or the storage folder cannot be used."""

    status = 503


def register_error_handlers(app: Flask) -> None:
    """Map every exception that reaches Flask to the contract's JSON envelope."""

    @app.errorhandler(ServiceError)
    def handle_service_error(error: ServiceError) -> tuple[Response, int]:
        if error.status >= 500:
            logger.error("%s: %s (%s)", type(error).__name__, error.message, _ids())
        else:
            logger.info("Rejected request: %s (%s)", error.message, _ids())
        response, status = failure(error.message, error.status, error.errors)
        if isinstance(error, Unauthorized):
            # RFC 6750 section 3: a 401 names the scheme the client must use.
            response.headers["WWW-Authenticate"] = 'Bearer realm="dicom-service"'
        return response, status

    @app.errorhandler(DcmtkError)
    def handle_dcmtk_error(error: DcmtkError) -> tuple[Response, int]:
        # A missing binary is a deployment problem (503). Any other failure
        # of a local tool on a file that the service wrote is a bug (500).
        status = 503 if isinstance(error, DcmtkNotFound) else 500
        logger.error(
            "%s (command: %s) (%s)", error.message, error.command_line, _ids()
        )
        return failure(error.message, status)

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        response, status = failure(_http_message(error), status)
        # Werkzeug's own headers, such as Allow on a 405, stay on the envelope.
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> tuple[Response, int]:
        logger.exception("Unhandled error (%s)", _ids())
        return failure(f"Internal server error: {type(error).__name__}.", 500)


def _ids() -> str:
    """Return the request ID and the route's arguments (such as the filename)."""
    view_args = request.view_args or {}
    arguments = " ".join(
        f"{name}={str(value)[:80]!r}" for name, value in view_args.items()
    )
    request_id = f"request_id={g.get('request_id', '')}"
    return f"{request_id} {arguments}".strip()


def _http_message(error: HTTPException) -> str:
    messages: dict[int, str] = {
        404: "Route not found. GET / lists the route groups.",
        405: "Method not allowed on this route.",
        413: "Request body too large. The limit is set by MAX_CONTENT_LENGTH.",
    }
    code: Any = error.code
    return messages.get(code, error.description or error.name)
