"""Service routes: ``/``, ``/health`` and ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from .. import __version__, dcmtk
from ..errors import ServiceError
from ..orthanc import OrthancError
from ..responses import failure, success
from ..services import services

blueprint = Blueprint("service", __name__)

SERVICE_NAME = "dicom-service"
REQUIRED_TOOLS = ("dump2dcm", "dcmdump", "storescu", "echoscu")


@blueprint.get("/")
def index() -> tuple[Response, int]:
    """Return the service name, version and route groups."""
    data = {
        "name": SERVICE_NAME,
        "version": __version__,
        "routes": {
            "service": ["/", "/health", "/openapi.json"],
            "instances": "/api/dicom",
            "worklists": "/api/orthanc",
        },
    }
    return success(data, "DICOM service")


@blueprint.get("/health")
def health() -> tuple[Response, int]:
    """Report the state of DCMTK, the storage folders and the PACS."""
    checks = {
        "dcmtk": _check_dcmtk(),
        "storage": _check_storage(),
        "pacs": _check_pacs(),
    }
    problems = [
        f"{name}: {check['message']}" for name, check in checks.items() if not check["ok"]
    ]
    data: dict[str, Any] = {"status": "unhealthy" if problems else "healthy", **checks}
    if problems:
        data["reason"] = "; ".join(problems)
        return _unhealthy(data)
    return success(data, "Service is healthy")


@blueprint.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI document of every route."""
    from ..openapi import build_spec

    return jsonify(build_spec())


def _unhealthy(data: dict[str, Any]) -> tuple[Response, int]:
    response, _ = failure(f"Service is unhealthy: {data['reason']}", 503)
    body = response.get_json()
    body["data"] = data
    return jsonify(body), 503


def _check_dcmtk() -> dict[str, Any]:
    missing = [tool for tool in REQUIRED_TOOLS if not dcmtk.is_available(tool)]
    if missing:
        return {"ok": False, "message": f"DCMTK tools not found on PATH: {', '.join(missing)}"}
    return {"ok": True, "message": "all DCMTK tools found"}


def _check_storage() -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, store in (("instances", services().instances), ("worklists", services().worklists)):
        try:
            store.check_usable()
        except ServiceError as error:
            return {"ok": False, "message": error.message}
        result[name] = str(store.root)
    return {"ok": True, "message": "storage folders are writable", **result}


def _check_pacs() -> dict[str, Any]:
    config = services().config
    peer = f"{config['ORTHANC_AET']}@{config['ORTHANC_HOST']}:{config['ORTHANC_DICOM_PORT']}"
    try:
        dcmtk.echoscu(
            config["ORTHANC_HOST"], config["ORTHANC_DICOM_PORT"],
            config["ORTHANC_AET"], config["DICOM_AET"], min(services().timeout, 5),
        )  # fmt: skip
    except dcmtk.DcmtkError as error:
        return {"ok": False, "peer": peer, "message": f"C-ECHO to {peer} failed: {error.message}"}

    result: dict[str, Any] = {"ok": True, "peer": peer, "message": f"C-ECHO to {peer} succeeded"}
    if services().orthanc is not None:
        try:
            system = services().orthanc.system()  # type: ignore[union-attr]
            result["orthancVersion"] = system.get("Version")
        except OrthancError as error:
            return {**result, "ok": False, "message": f"Orthanc REST API failed: {error}"}
    return result
