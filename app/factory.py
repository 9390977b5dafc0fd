"""The application factory."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from typing import Any

from flask import Flask, Request, Response, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from .config import load_config
from .errors import Unauthorized, register_error_handlers
from .services import build_services
from .uids import check_root

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("app.requests")

# Routes that respond without a token, so that orchestrators can probe them.
OPEN_ENDPOINTS = {"service.health"}

# A client's X-Request-ID is kept only when it cannot forge log lines.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Create the Flask application from the environment and ``overrides``."""
    app = Flask(__name__)
    config = load_config()
    config.update(overrides or {})
    if config["DICOM_UID_ROOT"]:
        check_root(config["DICOM_UID_ROOT"])
    app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    app.extensions["dicom_services"] = build_services(config)
    register_error_handlers(app)
    _register_request_hooks(app)

    from .api import imports, instances, service, worklists

    app.register_blueprint(service.blueprint)
    app.register_blueprint(instances.blueprint, url_prefix="/api/dicom")
    app.register_blueprint(imports.blueprint, url_prefix="/api/dicom")
    app.register_blueprint(worklists.blueprint, url_prefix="/api/orthanc")

    if not config["API_TOKEN"]:
        logger.warning(
            "API_TOKEN is not set: every route is open to anyone who can reach "
            "the service. Set API_TOKEN in production."
        )
    logger.info(
        "Service ready: instances in %s, worklists in %s, Orthanc %s@%s:%s",
        config["DICOM_STORAGE_DIR"], config["WORKLIST_DIR"],
        config["ORTHANC_AET"], config["ORTHANC_HOST"], config["ORTHANC_DICOM_PORT"],
    )  # fmt: skip
    return app


def _register_request_hooks(app: Flask) -> None:
    @app.before_request
    def start_request() -> None:
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        g.started = time.monotonic()
        _check_token(app)
        _check_chunked_length(app)

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if response.status_code >= 400 and _has_body(request):
            # A request rejected before its body was read leaves that body on
            # the connection, so the next request on it would be misread.
            response.headers["Connection"] = "close"
        elapsed = (time.monotonic() - g.get("started", time.monotonic())) * 1000
        request_logger.info(
            "%s %s %d %.1f ms request_id=%s",
            request.method, request.path, response.status_code, elapsed,
            g.get("request_id", ""),
        )  # fmt: skip
        return response


def _has_body(incoming: Request) -> bool:
    return bool(incoming.content_length) or "chunked" in incoming.headers.get(
        "Transfer-Encoding", ""
    ).lower()


def _check_chunked_length(app: Flask) -> None:
    """Raise 413 for a chunked body longer than MAX_CONTENT_LENGTH.

    Werkzeug 3.1 stops reading a body without Content-Length at the limit
    and returns the first MAX_CONTENT_LENGTH bytes as if they were all, so
    the body is read here and one more byte is requested from the server.
    """
    if request.content_length is not None:
        return
    if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return

    data = request.get_data(cache=True)
    if len(data) >= app.config["MAX_CONTENT_LENGTH"]:
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()


def _check_token(app: Flask) -> None:
    token = app.config["API_TOKEN"]
    if not token or request.endpoint in OPEN_ENDPOINTS:
        return

    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        supplied.strip().encode(), token.encode()
    ):
        raise Unauthorized(
            "Missing or wrong bearer token. Send the header "
            "'Authorization: Bearer <API_TOKEN>'."
        )
