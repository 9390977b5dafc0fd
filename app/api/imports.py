"""Route ``POST /api/dicom/instances/import``: check, repair and store DICOM files."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, request
from marshmallow import fields, validate

from ..errors import InvalidRequest, PacsError, Unavailable
from ..fields import DicomText
from ..importing import ImportOptions, Upload, import_files
from ..openapi import register_file_body, register_query
from ..repair import REASONS
from ..responses import success
from ..schemas import StrictSchema
from ..sending import send_files, target_from
from ..services import services
from .common import json_body, load_query

logger = logging.getLogger(__name__)

blueprint = Blueprint("imports", __name__)

DICOM_MEDIA_TYPES = ("application/dicom", "application/octet-stream")
RAW_BODY_NAME = "request body"
MAX_LABEL_LENGTH = 255


class ImportQuery(StrictSchema):
    """Query of ``POST /api/dicom/instances/import``."""

    repair = fields.Boolean(
        load_default=None,
        metadata={"description": "Repair what can be repaired (default: IMPORT_REPAIR)"},
    )
    send = fields.Boolean(
        load_default=False,
        metadata={"description": "Send each stored file to the configured Orthanc"},
    )
    reason = fields.String(
        load_default="CORRECT",
        validate=validate.OneOf(REASONS, error="Must be CORRECT or COERCE."),
        metadata={"description": "ReasonForTheAttributeModification (0400,0565)"},
    )
    source = DicomText(
        "SourceOfPreviousValues",
        load_default="",
        metadata={"description": "SourceOfPreviousValues (0400,0564), for example the sending institution"},
    )


@blueprint.post("/instances/import")
def import_instances() -> tuple[Response, int]:
    """Check DICOM files, repair them on request, store them and optionally send them."""
    query = load_query(ImportQuery())
    uploads = _uploads()
    config = services().config
    repair = config["IMPORT_REPAIR"] if query["repair"] is None else query["repair"]
    options = ImportOptions(
        repair=bool(repair),
        reason=query["reason"],
        source=query["source"],
        uid_root=config["DICOM_UID_ROOT"],
        timeout=services().timeout,
    )

    store = services().instances
    store.check_usable()
    try:
        results = import_files(uploads, store, options)
    except OSError as error:
        raise Unavailable(f"Could not write to the storage folder: {error}") from error

    accepted = [result for result in results if result["accepted"]]
    if not accepted:
        keys = _error_keys([result["name"] for result in results])
        raise InvalidRequest(
            "No file was imported: every upload was rejected for the reason listed "
            "under its name in errors.",
            {key: [result["message"]] for key, result in zip(keys, results)},
        )
    if query["send"]:
        _send(accepted)

    data = {
        "total": len(results),
        "accepted": len(accepted),
        "rejected": len(results) - len(accepted),
        "repaired": sum(1 for result in accepted if result["repaired"]),
        "results": results,
    }
    message = f"Imported {len(accepted)} of {len(results)} DICOM files"
    if query["send"]:
        message += " and sent them to Orthanc"
    return success(data, message, 201)


def create_request_body() -> Any:
    """Return the body of a create request, from JSON or from a multipart form.

    In a multipart form the fields are form values, and the ``image`` or
    ``pdf`` part is the file itself.
    """
    if request.mimetype != "multipart/form-data":
        return json_body()

    body: dict[str, Any] = dict(request.form.items())
    for name in ("image", "pdf"):
        part = request.files.get(name)
        if part is not None:
            body[name] = part.read()
    unknown = [name for name in request.files if name not in ("image", "pdf")]
    if unknown:
        raise InvalidRequest(
            "Invalid request body",
            {name: ["Unknown file part. Send the file as 'image' or 'pdf'."] for name in unknown},
        )
    return body


def _uploads() -> list[Upload]:
    if request.mimetype == "multipart/form-data":
        uploads = [
            Upload(_label(part.filename or field_name), part.read())
            for field_name, part in request.files.items(multi=True)
        ]
        if not uploads:
            raise InvalidRequest(
                "No file was uploaded.",
                {"files": ["Attach one or more DICOM files as multipart file parts."]},
            )
        return uploads

    if request.mimetype in DICOM_MEDIA_TYPES:
        return [Upload(RAW_BODY_NAME, request.get_data())]

    raise InvalidRequest(
        f"Unsupported Content-Type {request.mimetype or 'none'!r}.",
        {"body": ["Send one file as application/dicom, or several as multipart/form-data."]},
    )


def _label(filename: str) -> str:
    """Return a client's filename fit for messages and logs: printable, at most 255 characters."""
    printable = "".join(character for character in filename if character.isprintable())
    return printable[:MAX_LABEL_LENGTH] or "unnamed file"


def _error_keys(names: list[str]) -> list[str]:
    """Return one distinct ``errors`` key per upload, in the order of ``names``.

    Clients may give several files the same name. A repeated name gets the
    upload's position in the request (1 for the first file), so that no
    reason replaces another.
    """
    keys: list[str] = []
    for position, name in enumerate(names, start=1):
        key = name
        while key in keys:
            key = f"{key} (upload {position})"
        keys.append(key)
    return keys


def _send(accepted: list[dict[str, Any]]) -> None:
    """Send the stored files over one association and add each file's outcome.

    Raises
    ------
    PacsError
        If storescu sent no file (for example because the association
        failed) or the peer did not store every file. The message and
        ``errors`` name each stored file, so that the client can send it
        again instead of importing another copy.
    """
    store = services().instances
    names = ", ".join(result["filename"] for result in accepted)
    paths = [store.resolve(result["filename"]) for result in accepted]
    target = target_from({}, services().config)
    try:
        outcomes = send_files(paths, target, services().timeout, services().orthanc)
    except PacsError as error:
        reason = error.message.rstrip(".")
        raise PacsError(
            f"Stored {names} but sent none of them. {reason}. Send each file again "
            "with POST /api/dicom/instances/{filename}/send instead of importing "
            "it again.",
            {
                result["filename"]: [
                    (
                        "Stored but not sent. Send it again with POST "
                        f"/api/dicom/instances/{result['filename']}/send."
                    )
                ]
                for result in accepted
            },
        ) from error

    by_name = {outcome["filename"]: outcome for outcome in outcomes}
    for result in accepted:
        outcome = by_name[result["filename"]]
        result["send"] = {
            "success": outcome["success"],
            "status": outcome["status"],
            "orthancId": outcome.get("orthancId"),
        }

    failed = [result for result in accepted if not result["send"]["success"]]
    if failed:
        raise PacsError(
            f"Stored {names}, but {target.called_aet}@{target.host}:{target.port} "
            f"did not store {len(failed)} of {len(accepted)} files. Fix them and "
            "send again with POST /api/dicom/instances/{filename}/send.",
            {
                result["filename"]: [
                    f"C-STORE status {result['send']['status']}.",
                    *result["remainingProblems"],
                ]
                for result in failed
            },
        )


def _register_documentation() -> None:
    endpoint = f"{blueprint.name}.import_instances"
    register_query(endpoint, ImportQuery)
    binary = {"type": "string", "format": "binary"}
    register_file_body(
        endpoint,
        {
            "application/dicom": {"schema": binary},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": binary}},
                }
            },
        },
    )


_register_documentation()
