"""Instances made from content: a JPEG or PNG image with img2dcm, a PDF with pdf2dcm.

An image becomes a Secondary Capture Image (PS3.3 section A.8.1), or a VL
Photographic Image (section A.32.4) when the modality is XC. A PDF becomes
an Encapsulated PDF (section A.45.1). The patient, study and series data of
the request are passed to the tool with ``--key``, so the new object can
join an existing study through its StudyInstanceUID.
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from marshmallow import ValidationError, fields

from . import dcmtk
from .builder import FIELD_KEYWORDS
from .errors import InvalidRequest
from .png import PngError, png_to_bmp
from .storage import FileStore
from .uids import generate_uid

logger = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF-"

SECONDARY_CAPTURE_UID = "1.2.840.10008.5.1.4.1.1.7"
VL_PHOTOGRAPHIC_UID = "1.2.840.10008.5.1.4.1.1.77.1.4"
ENCAPSULATED_PDF_UID = "1.2.840.10008.5.1.4.1.1.104.1"

# Modality of each object: images without one are "OT" (other), and the
# Encapsulated Document Series module allows only "DOC" for a PDF.
DEFAULT_IMAGE_MODALITY = "OT"
PHOTO_MODALITY = "XC"
DOCUMENT_MODALITY = "DOC"

MANUFACTURER = "dicom-service"

# Exit status of DCMTK tools for an input file that they read but could not
# use (EXITCODE_INVALID_INPUT_FILE in DCMTK's ofstd/ofexit.h). pdf2dcm 3.6.7
# returns it when the content is not a PDF it can encapsulate.
EXIT_INVALID_INPUT_FILE = 22

# The texts of the C library's error codes (strerror). DCMTK ends its message
# with one of them when a system call failed.
_SYSTEM_ERRORS = tuple(os.strerror(code) for code in errno.errorcode)


class Base64Content(fields.Field):
    """File content: base64 text in JSON, or the bytes of a multipart file part."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        kwargs.setdefault(
            "metadata",
            {"description": f"{kind} file content, base64-encoded", "type": "string",
             "format": "byte"},
        )  # fmt: skip
        super().__init__(**kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bytes:
        if isinstance(value, bytes):
            content = value
        elif isinstance(value, str):
            try:
                content = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError(f"Must be the {self.kind} file encoded as base64.") from None
        else:
            raise ValidationError(f"Must be the {self.kind} file encoded as base64.")

        if not content:
            raise ValidationError(f"The {self.kind} file is empty.")
        return content


def has_content(body: Mapping[str, Any]) -> bool:
    """Return whether a validated create body carries an image or a PDF."""
    return body.get("image") is not None or body.get("pdf") is not None


def create_from_content(
    body: dict[str, Any], store: FileStore, uid_root: str, timeout: float
) -> dict[str, Any]:
    """Build an instance from the image or PDF of ``body`` and store it.

    Raises
    ------
    InvalidRequest
        If both or neither of ``image`` and ``pdf`` are given, or the content
        is not a JPEG, PNG or PDF as named.
    """
    if body.get("image") is not None and body.get("pdf") is not None:
        raise InvalidRequest(
            "Invalid request body",
            {"image": ["Send either image or pdf, not both."]},
        )

    keys, uids = _element_keys(body, uid_root)
    work_paths: list[Path] = []
    output = store.temporary_path(".dcm")
    try:
        if body.get("pdf") is not None:
            sop_class = _write_pdf(body, keys, store, output, work_paths, timeout)
        else:
            sop_class = _write_image(body, keys, store, output, work_paths, timeout)
        final = store.publish(output)
    finally:
        output.unlink(missing_ok=True)
        for path in work_paths:
            path.unlink(missing_ok=True)

    logger.info(
        "Wrote %s (SOP Class %s, SOP Instance UID %s)",
        final.name, sop_class, uids["sopInstanceUID"],
    )  # fmt: skip
    return {"filename": final.name, "filepath": str(final), "uids": uids, "sopClassUID": sop_class}


def _write_image(
    body: dict[str, Any],
    keys: list[tuple[str, str]],
    store: FileStore,
    output: Path,
    work_paths: list[Path],
    timeout: float,
) -> str:
    content: bytes = body["image"]
    if content.startswith(JPEG_MAGIC):
        input_format, suffix, data = "JPEG", ".jpg", content
    elif content.startswith(PNG_MAGIC):
        try:
            data = png_to_bmp(content)
        except PngError as error:
            errors = {"image": [str(error)]}
            raise InvalidRequest("Invalid request body", errors) from None
        input_format, suffix = "BMP", ".bmp"
    else:
        raise InvalidRequest(
            "Invalid request body",
            {"image": ["Must be a JPEG or PNG image (the content starts with neither signature)."]},
        )

    modality = body.get("modality") or DEFAULT_IMAGE_MODALITY
    photo = modality == PHOTO_MODALITY
    sop_class = VL_PHOTOGRAPHIC_UID if photo else SECONDARY_CAPTURE_UID
    image_keys = [
        *keys,
        ("Modality", modality),
        ("InstanceNumber", str(body.get("instanceNumber", 1))),
        ("Laterality", _series_laterality(body.get("laterality"))),
    ]

    image_path = store.temporary_path(suffix)
    work_paths.append(image_path)
    image_path.write_bytes(data)
    option = "--vl-photo" if photo else "--sec-capture"
    try:
        dcmtk.img2dcm(image_path, output, input_format, option, image_keys, timeout)
    except dcmtk.DcmtkError as error:
        # The BMP is written by png_to_bmp, so img2dcm failing on it is a
        # fault of the service and stays a server error.
        if input_format != "JPEG" or not _image_rejected(error):
            raise
        raise _conversion_error("image", "JPEG image", error, image_path) from None
    return sop_class


def _write_pdf(
    body: dict[str, Any],
    keys: list[tuple[str, str]],
    store: FileStore,
    output: Path,
    work_paths: list[Path],
    timeout: float,
) -> str:
    content: bytes = body["pdf"]
    if not content.startswith(PDF_MAGIC):
        raise InvalidRequest(
            "Invalid request body",
            {"pdf": ["Must be a PDF document (the content does not start with '%PDF-')."]},
        )
    modality = body.get("modality")
    if modality not in (None, DOCUMENT_MODALITY):
        raise InvalidRequest(
            "Invalid request body",
            {"modality": [f"Must be DOC or absent for a PDF, not {modality!r}."]},
        )

    title = body.get("documentTitle") or body.get("studyDescription") or ""
    pdf_keys = [
        *keys,
        ("DocumentTitle", title),
        ("InstanceNumber", str(body.get("instanceNumber", 1))),
    ]
    pdf_path = store.temporary_path(".pdf")
    work_paths.append(pdf_path)
    pdf_path.write_bytes(content)
    try:
        dcmtk.pdf2dcm(pdf_path, output, pdf_keys, timeout)
    except dcmtk.DcmtkError as error:
        if error.returncode != EXIT_INVALID_INPUT_FILE:
            raise
        raise _conversion_error("pdf", "PDF document", error, pdf_path) from None
    return ENCAPSULATED_PDF_UID


def _image_rejected(error: dcmtk.DcmtkError) -> bool:
    """Return whether img2dcm failed because of the image rather than the service.

    img2dcm 3.6.7 exits with status 1 on every failure, so only its message
    distinguishes them. A system error (such as a full disk) or a rejected
    ``--key`` is a fault of the service. Any other reason is the content's.
    """
    if isinstance(error, (dcmtk.DcmtkNotFound, dcmtk.DcmtkTimeout)):
        return False
    reasons = _dcmtk_reasons(error)
    return bool(reasons) and not any(
        reason.endswith(_SYSTEM_ERRORS) or "Bad override key" in reason
        for reason in reasons
    )


def _conversion_error(
    field_name: str, kind: str, error: dcmtk.DcmtkError, input_path: Path
) -> InvalidRequest:
    """Return the 400 error for content that DCMTK could not convert.

    The temporary paths of the work files are left out of DCMTK's reasons.
    """
    reasons = [
        reason.replace(f"file {input_path}: ", "").replace(str(input_path), f"the {kind}")
        for reason in _dcmtk_reasons(error)
    ]
    logger.info("Rejected %s content: %s", field_name, error.message)
    detail = "; ".join(reasons) or f"{error.command[0]} exited with status {error.returncode}"
    message = (
        f"The {kind} could not be converted to DICOM (DCMTK: {detail}). "
        f"Check that the content is a complete, undamaged {kind}."
    )
    return InvalidRequest("Invalid request body", {field_name: [message]})


def _dcmtk_reasons(error: dcmtk.DcmtkError) -> list[str]:
    """Return DCMTK's error and fatal log lines without their "E:" or "F:" marker."""
    lines = [line.strip() for line in error.stderr.splitlines()]
    return [line[2:].strip() for line in lines if line[:2] in ("E:", "F:")]


def _series_laterality(laterality: str | None) -> str:
    """Return the value of Laterality (0020,0060), which allows only R and L.

    The element is type 2C, so it stays empty when the request gives B, U
    or nothing, as for a scanned form.
    """
    return laterality if laterality in ("R", "L") else ""


def _element_keys(body: dict[str, Any], uid_root: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Return the ``--key`` pairs of the request's data, and the UIDs among them."""
    now = datetime.now()
    values: dict[str, str] = {
        "StudyDate": now.strftime("%Y%m%d"),
        "StudyTime": now.strftime("%H%M%S"),
        "StudyID": "1",
        "SeriesNumber": "1",
        "ContentDate": now.strftime("%Y%m%d"),
        "ContentTime": now.strftime("%H%M%S"),
        "Manufacturer": MANUFACTURER,
    }
    for field_name, keyword in FIELD_KEYWORDS.items():
        if keyword in ("Modality", "InstanceNumber", "Laterality"):
            continue
        if body.get(field_name) is not None:
            values[keyword] = str(body[field_name])

    values.setdefault("StudyInstanceUID", generate_uid(uid_root))
    values.setdefault("SeriesInstanceUID", generate_uid(uid_root))
    values["SOPInstanceUID"] = generate_uid(uid_root)

    keys = list(values.items())
    if any(not value.isascii() for value in values.values()):
        # PS3.3 section C.12.1.1.2: ISO_IR 192 is UTF-8, the encoding of
        # the command-line arguments.
        keys.insert(0, ("SpecificCharacterSet", "ISO_IR 192"))

    uids = {
        "studyInstanceUID": values["StudyInstanceUID"],
        "seriesInstanceUID": values["SeriesInstanceUID"],
        "sopInstanceUID": values["SOPInstanceUID"],
    }
    return keys, uids
