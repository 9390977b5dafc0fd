"""Marshmallow schemas of the request bodies and queries, one per body."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)

from .content import Base64Content
from .fields import DicomDate, DicomInteger, DicomText, DicomTime, DicomUID
from .modalities import load_table

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

NOT_EMPTY = validate.Length(min=1, error="Must not be empty.")


class StrictSchema(Schema):
    """A schema that rejects fields it does not define and names them."""

    class Meta:
        unknown = RAISE

    error_messages = {
        "unknown": "Unknown field. Check the spelling against the documented fields.",
        "type": "Must be a JSON object.",
    }


def validate_modality(value: str) -> None:
    """Reject a modality that the modality table does not list."""
    table = load_table()
    try:
        table.lookup(value)
    except KeyError:
        raise ValidationError(
            f"Unsupported modality {value!r}. Supported: {', '.join(table.codes())}."
        ) from None


class InstanceSchema(StrictSchema):
    """Body of ``POST /api/dicom/instances``: patient, study and series data."""

    patientID = DicomText("PatientID", required=True, validate=NOT_EMPTY)
    patientName = DicomText("PatientName")
    patientBirthDate = DicomDate("PatientBirthDate")
    patientSex = DicomText(
        "PatientSex",
        validate=validate.OneOf(["M", "F", "O"], error="Must be M, F or O (CS)."),
    )
    studyDescription = DicomText("StudyDescription")
    seriesDescription = DicomText("SeriesDescription")
    modality = DicomText("Modality", validate=validate_modality)
    accessionNumber = DicomText("AccessionNumber")
    institutionName = DicomText("InstitutionName")
    referringPhysicianName = DicomText("ReferringPhysicianName")
    performingPhysicianName = DicomText("PerformingPhysicianName")
    studyDate = DicomDate("StudyDate")
    studyTime = DicomTime("StudyTime")
    studyID = DicomText("StudyID")
    seriesNumber = DicomInteger("SeriesNumber")
    instanceNumber = DicomInteger("InstanceNumber")
    stationName = DicomText("StationName")
    bodyPartExamined = DicomText("BodyPartExamined")
    laterality = DicomText(
        "ImageLaterality",
        validate=validate.OneOf(
            ["R", "L", "B", "U"], error="Must be R, L, B (both) or U (unpaired) (CS)."
        ),
        metadata={
            "description": "Laterality of the imaged body part: Image Laterality "
            "(0020,0062) where the IOD has it, else Laterality (0020,0060) when R or L"
        },
    )
    studyInstanceUID = DicomUID("StudyInstanceUID")
    seriesInstanceUID = DicomUID("SeriesInstanceUID")
    # Content that replaces the generated image: img2dcm or pdf2dcm builds it.
    image = Base64Content("JPEG or PNG image")
    pdf = Base64Content("PDF document")
    documentTitle = DicomText("DocumentTitle")

    @validates_schema
    def check_anatomy(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Reject a body part or laterality that the modality's IOD cannot code."""
        table = load_table()
        try:
            modality = table.lookup(data.get("modality") or "")
        except KeyError:
            return

        body_part = data.get("bodyPartExamined")
        coded = body_part in table.anatomic_regions
        if modality.anatomic_region_required and body_part and not coded:
            raise ValidationError(
                f"{modality.code} images need an Anatomic Region code for Body Part "
                f"Examined. Use one of: {', '.join(sorted(table.anatomic_regions))}.",
                "bodyPartExamined",
            )
        if modality.code == "MG" and data.get("laterality") == "U":
            raise ValidationError(
                "Must be R, L or B for MG: a breast is a paired structure.", "laterality"
            )


class SampleSchema(StrictSchema):
    """Body of ``POST /api/dicom/instances/sample``: optional overrides."""

    patientID = DicomText("PatientID", validate=NOT_EMPTY)
    patientName = DicomText("PatientName")
    modality = DicomText("Modality", validate=validate_modality)
    studyDescription = DicomText("StudyDescription")


class SendSchema(StrictSchema):
    """Body of ``POST /api/dicom/instances/{filename}/send``: the Storage SCP."""

    host = fields.String(metadata={"description": "Host name or IP address of the Storage SCP"})
    port = fields.Integer(
        strict=True,
        validate=validate.Range(1, 65535, error="Must be a TCP port from 1 to 65535."),
    )
    aet = DicomText(
        "CalledAETitle", vr="AE", validate=NOT_EMPTY,
        metadata={"description": "Called AE title of the Storage SCP (AE)"},
    )  # fmt: skip
    sourceAet = DicomText(
        "CallingAETitle", vr="AE", validate=NOT_EMPTY,
        metadata={"description": "Calling AE title of this service (AE)"},
    )  # fmt: skip

    @validates("host")
    def check_host(self, value: str, **kwargs: Any) -> None:
        # storescu reads "host:port" inside its host argument, so a colon
        # could replace the checked port; it cannot address IPv6 peers either.
        if not _HOSTNAME.match(value):
            raise ValidationError(
                "Must be a host name or an IPv4 address, without a port "
                "(the port goes in 'port'). IPv6 addresses are not supported."
            )


class BatchSendSchema(SendSchema):
    """Body of ``POST /api/dicom/instances/send``: files sent over one association."""

    filenames = fields.List(
        fields.String(),
        required=True,
        validate=validate.Length(1, 1000, error="Must list 1 to 1000 filenames."),
    )


class PageQuery(StrictSchema):
    """Paging of the listing routes: ``limit`` (1 to 1000) and ``offset``."""

    limit = fields.Integer(
        load_default=None,
        validate=validate.Range(1, 1000, error="Must be from 1 to 1000."),
    )
    offset = fields.Integer(
        load_default=0, validate=validate.Range(min=0, error="Must be 0 or more.")
    )
