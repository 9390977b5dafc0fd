"""Routes under ``/api/orthanc``: modality worklist entries served by Orthanc.

Each entry is a ``.wl`` file in ``WORKLIST_DIR``, and its filename is the
entry's id in every route.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from flask import Blueprint, Response

from ..errors import InvalidRequest, NotFound, Unavailable
from ..openapi import register_body, register_query
from ..responses import success
from ..schemas import InstanceSchema
from ..services import services
from ..worklist_schemas import (
    WorklistCleanupSchema,
    WorklistInstanceSchema,
    WorklistQuery,
    WorklistSampleSchema,
    WorklistSchema,
)
from ..worklists import (
    UnreadableWorklist,
    WorklistWriter,
    describe,
    filter_entries,
    read_entry,
    stored_file,
)
from .common import json_body, load, load_query, run_batch

logger = logging.getLogger(__name__)

blueprint = Blueprint("worklists", __name__)

CREATED_MESSAGE = "Worklist created successfully"
SAMPLE_DEFAULTS = {
    "patientId": "123456",
    "patientName": "Sample^Patient",
    "modality": "CR",
    "studyDescription": "Sample chest X-ray",
    "scheduledStationAETitle": "SAMPLE_CR",
}
SECONDS_PER_DAY = 86400

# Entry fields copied into an instance body, by InstanceSchema field name.
INSTANCE_FIELDS = {
    "patientID": "patientId",
    "patientName": "patientName",
    "patientBirthDate": "patientBirthDate",
    "patientSex": "patientSex",
    "accessionNumber": "accessionNumber",
    "studyInstanceUID": "studyInstanceUID",
    "studyDescription": "requestedProcedureDescription",
    "studyID": "requestedProcedureID",
    "modality": "modality",
    "referringPhysicianName": "referringPhysician",
    "institutionName": "institutionName",
    "performingPhysicianName": "performingPhysician",
    "stationName": "scheduledStationName",
}


@blueprint.post("/worklists")
def create_worklist() -> tuple[Response, int]:
    """Create a worklist entry from patient, order and scheduled step data."""
    body = load(WorklistSchema(), json_body())
    return success(_create(body), CREATED_MESSAGE, 201)


@blueprint.post("/worklists/batch")
def create_batch() -> tuple[Response, int]:
    """Create several worklist entries, continuing past items that fail."""
    data = run_batch("worklists", "worklist", WorklistSchema, _create, CREATED_MESSAGE)
    message = f"Created {data['succeeded']} of {data['total']} worklists"
    return success(data, message, 201)


@blueprint.get("/worklists")
def list_worklists() -> tuple[Response, int]:
    """List worklist entries, newest first, with filters and paging."""
    # NOTE: filters read every file in the folder, so a filtered listing
    # takes time in proportion to the number of entries.
    query = load_query(WorklistQuery())
    limit, offset = query.pop("limit"), query.pop("offset")
    store = services().worklists

    if query:
        _, everything = store.listing(None, 0)
        entries = filter_entries(everything, query)
        count = len(entries)
        page = entries[offset:] if limit is None else entries[offset : offset + limit]
    else:
        count, files = store.listing(limit, offset)
        page = [describe(stored) for stored in files]

    data = {"count": count, "limit": limit, "offset": offset, "files": page}
    return success(data, f"Found {count} worklists")


@blueprint.get("/worklists/stats")
def worklist_stats() -> tuple[Response, int]:
    """Count worklist entries by modality, scheduled date and station AE title."""
    store = services().worklists
    entries = [describe(stored) for stored in store.entries()]
    readable = [entry for entry in entries if entry["readable"]]
    modified = sorted(entry["modified"] for entry in entries)

    data = {
        "count": len(entries),
        "unreadable": len(entries) - len(readable),
        "totalSize": sum(entry["size"] for entry in entries),
        "byModality": dict(Counter(entry["modality"] for entry in readable)),
        "byScheduledDate": dict(
            sorted(Counter(entry["scheduledDate"] for entry in readable).items())
        ),
        "byStationAETitle": dict(
            Counter(entry["scheduledStationAETitle"] for entry in readable)
        ),
        "oldest": modified[0] if modified else None,
        "newest": modified[-1] if modified else None,
        "worklistDir": str(store.root),
    }
    return success(data, "Worklist statistics")


@blueprint.post("/worklists/cleanup")
def cleanup_worklists() -> tuple[Response, int]:
    """Delete entries last written more than ``daysOld`` days ago (default 30)."""
    body = load(WorklistCleanupSchema(), json_body(required=False))
    days = body["daysOld"]
    cutoff = time.time() - days * SECONDS_PER_DAY
    store = services().worklists

    deleted: list[str] = []
    for stored in list(store.entries()):
        if stored.modified >= cutoff:
            continue
        try:
            store.delete(stored.filename)
        except NotFound:
            logger.info(
                "Worklist %s was deleted by another request during cleanup",
                stored.filename,
            )
            continue
        deleted.append(stored.filename)

    remaining = sum(1 for _ in store.entries())
    data = {
        "daysOld": days,
        "deleted": len(deleted),
        "files": deleted,
        "remaining": remaining,
    }
    return success(data, f"Deleted {len(deleted)} worklists older than {days} days")


@blueprint.post("/worklists/sample")
def create_sample() -> tuple[Response, int]:
    """Create a sample worklist entry, PatientID 123456 unless overridden."""
    overrides = load(WorklistSampleSchema(), json_body(required=False))
    body = load(WorklistSchema(), {**SAMPLE_DEFAULTS, **overrides})
    return success(_create(body), "Sample worklist created successfully", 201)


@blueprint.get("/worklists/<filename>")
def get_worklist(filename: str) -> tuple[Response, int]:
    """Return one worklist entry, read back from its file."""
    path = services().worklists.resolve(filename)
    try:
        entry = describe(stored_file(path))
    except FileNotFoundError:
        raise NotFound(f"Worklist {filename!r} not found.") from None
    if not entry["readable"]:
        raise Unavailable(f"Worklist {filename!r} cannot be read: {entry['error']}")
    return success(entry, "Worklist found")


@blueprint.put("/worklists/<filename>")
def replace_worklist(filename: str) -> tuple[Response, int]:
    """Replace a worklist entry atomically, keeping its filename."""
    path = services().worklists.resolve(filename)
    body = load(WorklistSchema(), json_body())
    try:
        written = _writer().replace(path, body)
    except OSError as error:
        raise Unavailable(f"Could not write to the worklist folder: {error}") from error
    return success(written.as_dict(), "Worklist replaced successfully")


@blueprint.delete("/worklists/<filename>")
def delete_worklist(filename: str) -> tuple[Response, int]:
    """Delete a worklist entry, so modalities no longer receive it."""
    services().worklists.delete(filename)
    return success({"filename": filename}, "Worklist deleted successfully")


@blueprint.post("/worklists/<filename>/instances")
def create_instance_for_worklist(filename: str) -> tuple[Response, int]:
    """Create an image instance for a worklist entry, in the ordered study."""
    store = services().worklists
    path = store.resolve(filename)
    options = load(WorklistInstanceSchema(), json_body(required=False))
    remove = options.pop("removeWorklist")

    try:
        entry = read_entry(path)
    except UnreadableWorklist as error:
        raise Unavailable(f"Worklist {filename!r} cannot be read: {error}") from error

    body = _instance_body(filename, entry, options)
    services().instances.check_usable()
    try:
        created = services().builder.create(body)
    except OSError as error:
        raise Unavailable(f"Could not write to the storage folder: {error}") from error

    removed = False
    if remove:
        try:
            store.delete(filename)
            removed = True
        except NotFound:
            logger.warning(
                "Worklist %s was deleted before the instance was written", filename
            )

    data = {
        **created.as_dict(),
        "worklist": filename,
        "worklistRemoved": removed,
        "accessionNumber": entry["accessionNumber"],
        "patientId": entry["patientId"],
    }
    return success(data, "DICOM instance created for the worklist successfully", 201)


def _writer() -> WorklistWriter:
    found = services()
    return WorklistWriter(
        found.worklists,
        found.renderer,
        found.config["DICOM_UID_ROOT"],
        found.timeout,
        found.builder.dictionary,
    )


def _create(body: dict[str, Any]) -> dict[str, Any]:
    services().worklists.check_usable()
    try:
        return _writer().create(body).as_dict()
    except OSError as error:
        raise Unavailable(f"Could not write to the worklist folder: {error}") from error


def _instance_body(
    filename: str, entry: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Build and validate the instance body for ``entry`` with ``overrides``."""
    raw = {
        field: entry[source]
        for field, source in INSTANCE_FIELDS.items()
        if entry.get(source)
    }
    try:
        return load(InstanceSchema(), {**raw, **overrides})
    except InvalidRequest as error:
        raise InvalidRequest(
            f"Worklist {filename!r} has values that an image instance does not accept. "
            "Fix the entry with PUT or override the fields named in errors.",
            error.errors,
        ) from None


register_body("worklists.create_worklist", WorklistSchema)
register_body("worklists.create_batch", WorklistSchema, array=True)
register_body("worklists.create_sample", WorklistSampleSchema, required=False)
register_body("worklists.replace_worklist", WorklistSchema)
register_body("worklists.cleanup_worklists", WorklistCleanupSchema, required=False)
register_body(
    "worklists.create_instance_for_worklist", WorklistInstanceSchema, required=False
)
register_query("worklists.list_worklists", WorklistQuery)
