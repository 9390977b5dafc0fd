"""Routes under ``/api/dicom``: create, list, validate, send and delete instances."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, send_file

from .. import dcmtk
from ..content import create_from_content, has_content
from ..errors import NotFound, PacsError, Unavailable
from ..modalities import load_table
from ..responses import success
from ..schemas import (
    BatchSendSchema,
    InstanceSchema,
    PageQuery,
    SampleSchema,
    SendSchema,
)
from ..sending import send_files, target_from
from ..services import services
from ..validation import validate_file
from .common import json_body, load, load_query, run_batch
from .imports import create_request_body

logger = logging.getLogger(__name__)

blueprint = Blueprint("instances", __name__)

CREATED_MESSAGE = "DICOM instance created successfully"
SAMPLE_DEFAULTS = {
    "patientID": "123456",
    "patientName": "Sample^Patient",
    "modality": "CR",
    "studyDescription": "Sample study",
}


@blueprint.post("/instances")
def create_instance() -> tuple[Response, int]:
    """Create an instance from patient, study and series data, and an optional image or PDF."""
    body = load(InstanceSchema(), create_request_body())
    created = _create(body)
    return success(created, CREATED_MESSAGE, 201)


@blueprint.post("/instances/batch")
def create_batch() -> tuple[Response, int]:
    """Create several instances; one bad item does not stop the others."""
    data = run_batch("instances", "instance", InstanceSchema, _create, CREATED_MESSAGE)
    message = f"Created {data['succeeded']} of {data['total']} DICOM instances"
    return success(data, message, 201)


@blueprint.get("/instances")
def list_instances() -> tuple[Response, int]:
    """List stored instances, newest first, with paging."""
    page = load_query(PageQuery())
    count, files = services().instances.listing(page["limit"], page["offset"])
    data = {
        "count": count,
        "limit": page["limit"],
        "offset": page["offset"],
        "files": [item.as_dict() for item in files],
    }
    return success(data, f"Found {count} DICOM instances")


@blueprint.get("/instances/stats")
def instance_stats() -> tuple[Response, int]:
    """Count stored instances and their sizes."""
    files = list(services().instances.entries())
    sizes = [item.size for item in files]
    data = {
        "count": len(files),
        "totalSize": sum(sizes),
        "averageSize": sum(sizes) // len(sizes) if sizes else 0,
        "largestSize": max(sizes, default=0),
        "oldest": min(files, key=lambda item: item.modified).as_dict()["modified"] if files else None,
        "newest": max(files, key=lambda item: item.modified).as_dict()["modified"] if files else None,
        "storageDir": str(services().instances.root),
    }
    return success(data, "DICOM instance statistics")


@blueprint.get("/instances/<filename>/validate")
def validate_instance(filename: str) -> tuple[Response, int]:
    """Check an instance for the required UIDs and against its IOD."""
    path = services().instances.resolve(filename)
    try:
        report = validate_file(path, services().iod, services().timeout)
    except (OSError, dcmtk.DcmtkError):
        _raise_if_deleted(path)
        raise
    # A delete during the checks leaves a report about a file that is gone.
    _raise_if_deleted(path)
    message = "DICOM instance is valid" if report["isValid"] else "DICOM instance is not valid"
    return success(report, message)


@blueprint.get("/instances/<filename>/dump")
def dump_instance(filename: str) -> tuple[Response, int]:
    """Return the dcmdump text of an instance."""
    path = services().instances.resolve(filename)
    try:
        text = dcmtk.dcmdump(path, services().timeout)
    except dcmtk.DcmtkError:
        _raise_if_deleted(path)
        raise
    return success({"filename": filename, "dump": text}, "DICOM instance structure")


@blueprint.post("/instances/<filename>/send")
def send_instance(filename: str) -> tuple[Response, int]:
    """Send an instance to the PACS with C-STORE."""
    store = services().instances
    path = store.resolve(filename)
    body = load(SendSchema(), json_body(required=False))
    target = target_from(body, services().config)

    result = send_files([path], target, services().timeout, services().orthanc)[0]
    if result.get("deleted"):
        raise NotFound(
            f"{filename} was deleted while it was being sent to "
            f"{target.called_aet}@{target.host}:{target.port}."
        )
    if not result["success"]:
        raise PacsError(
            f"{target.called_aet}@{target.host}:{target.port} did not store "
            f"{filename}: C-STORE status {result['status']}. DCMTK output: "
            f"{_last_lines(result['output'])}"
        )

    data = {
        "filename": filename,
        "orthancHost": target.host,
        "orthancPort": target.port,
        "calledAet": target.called_aet,
        "callingAet": target.calling_aet,
        "status": result["status"],
        "orthancId": result.get("orthancId"),
        "output": result["output"],
    }
    return success(data, "DICOM instance sent to Orthanc successfully")


@blueprint.post("/instances/send")
def send_batch() -> tuple[Response, int]:
    """Send several instances to the PACS over one association."""
    body = load(BatchSendSchema(), json_body())
    store = services().instances
    paths = [store.resolve(filename) for filename in dict.fromkeys(body["filenames"])]
    target = target_from(body, services().config)

    results = send_files(paths, target, services().timeout, services().orthanc)
    succeeded = sum(1 for result in results if result["success"])
    output = results[0]["output"] if results else ""
    for result in results:
        del result["output"]

    data = {
        "total": len(results),
        "succeeded": succeeded,
        "failed": len(results) - succeeded,
        "orthancHost": target.host,
        "orthancPort": target.port,
        "calledAet": target.called_aet,
        "callingAet": target.calling_aet,
        "results": results,
        "output": output,
    }
    if succeeded < len(results):
        raise PacsError(
            f"{target.called_aet}@{target.host}:{target.port} stored {succeeded} of "
            f"{len(results)} instances. DCMTK output: {_last_lines(output)}",
            {
                result["filename"]: [f"C-STORE status {result['status']}"]
                for result in results
                if not result["success"]
            },
        )
    return success(data, f"{succeeded} DICOM instances sent to Orthanc successfully")


@blueprint.get("/instances/<filename>/download")
def download_instance(filename: str) -> Response:
    """Download an instance as application/dicom."""
    path = services().instances.resolve(filename)
    try:
        # Opened here, so that a file deleted since the lookup is a 404.
        handle = open(path, "rb")
    except FileNotFoundError:
        _raise_if_deleted(path)
        raise
    return send_file(
        handle, mimetype="application/dicom", as_attachment=True, download_name=filename
    )


@blueprint.delete("/instances/<filename>")
def delete_instance(filename: str) -> tuple[Response, int]:
    """Delete a stored instance."""
    services().instances.delete(filename)
    return success({"filename": filename}, "DICOM instance deleted successfully")


@blueprint.post("/instances/sample")
def create_sample() -> tuple[Response, int]:
    """Create a sample instance, PatientID 123456 unless overridden."""
    overrides = load(SampleSchema(), json_body(required=False))
    body = load(InstanceSchema(), {**SAMPLE_DEFAULTS, **overrides})
    return success(_create(body), "Sample DICOM instance created successfully", 201)


@blueprint.get("/modalities")
def list_modalities() -> tuple[Response, int]:
    """List the supported modalities and their SOP Classes."""
    table = load_table()
    data = [
        {
            "modality": code,
            "sopClassUID": table.lookup(code).sop_class_uid,
            "sopClassName": table.lookup(code).sop_class_name,
        }
        for code in table.codes()
    ]
    return success(data, f"{len(data)} supported modalities")


@blueprint.get("/tools-status")
def tools_status() -> tuple[Response, int]:
    """Report the version of each DCMTK tool, or that it is missing."""
    data: dict[str, str] = {}
    for tool in dcmtk.TOOLS:
        try:
            data[tool] = dcmtk.tool_version(tool, services().timeout)
        except dcmtk.DcmtkError as error:
            data[tool] = f"missing or not working: {error.message}"
    return success(data, "DCMTK tools status")


def _create(body: dict[str, Any]) -> dict[str, Any]:
    services().instances.check_usable()
    try:
        if has_content(body):
            config = services().config
            return create_from_content(
                body, services().instances, config["DICOM_UID_ROOT"], services().timeout
            )
        return services().builder.create(body).as_dict()
    except OSError as error:
        raise Unavailable(f"Could not write to the storage folder: {error}") from error


def _raise_if_deleted(path: Path) -> None:
    """Raise :class:`NotFound` if ``path`` was deleted while a request used it."""
    if not path.exists():
        logger.info("%s was deleted while a request used it", path.name)
        raise NotFound(f"Instance {path.name!r} not found; it was deleted meanwhile.")


def _last_lines(output: str, count: int = 4) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return " ".join(lines[-count:])
