"""Marshmallow schemas of the worklist request bodies and queries, one per body.

The field names are those that existing clients send. Each text field is
checked against the value representation of the element it fills, with the
same rules as the instance fields in :mod:`app.schemas`.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from .fields import DicomDate, DicomInteger, DicomText, DicomTime, DicomUID
from .schemas import NOT_EMPTY, PageQuery, StrictSchema, validate_modality

# Requested Procedure Priority (0040,1003) defined terms, PS3.3 C.4.11.
PRIORITIES = ["STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW"]

# Field names that fill the same element. Clients send either spelling.
DATE_ALIASES = ("scheduledDate", "scheduledProcedureStepStartDate")
TIME_ALIASES = ("scheduledTime", "scheduledProcedureStepStartTime")

MAX_DAYS_OLD = 36500


class WorklistSchema(StrictSchema):
    """Body of ``POST /api/orthanc/worklists``: one scheduled procedure step."""

    patientId = DicomText("PatientID", required=True, validate=NOT_EMPTY)
    patientName = DicomText("PatientName", required=True, validate=NOT_EMPTY)
    patientBirthDate = DicomDate("PatientBirthDate")
    patientSex = DicomText(
        "PatientSex",
        validate=validate.OneOf(["M", "F", "O"], error="Must be M, F or O (CS)."),
    )
    accessionNumber = DicomText("AccessionNumber", validate=NOT_EMPTY)
    studyInstanceUID = DicomUID("StudyInstanceUID")
    studyDescription = DicomText(
        "RequestedProcedureDescription",
        metadata={
            "description": "RequestedProcedureDescription (LO) when "
            "requestedProcedureDescription is absent",
        },
    )
    requestedProcedureID = DicomText("RequestedProcedureID", validate=NOT_EMPTY)
    requestedProcedureDescription = DicomText("RequestedProcedureDescription")
    requestedProcedurePriority = DicomText(
        "RequestedProcedurePriority",
        validate=validate.OneOf(
            PRIORITIES, error=f"Must be one of {', '.join(PRIORITIES)} (SH)."
        ),
    )
    referringPhysician = DicomText("ReferringPhysicianName")
    requestingPhysician = DicomText("RequestingPhysician")
    institutionName = DicomText("InstitutionName")
    departmentName = DicomText("InstitutionalDepartmentName")
    scheduledDate = DicomDate("ScheduledProcedureStepStartDate")
    scheduledProcedureStepStartDate = DicomDate("ScheduledProcedureStepStartDate")
    scheduledTime = DicomTime("ScheduledProcedureStepStartTime")
    scheduledProcedureStepStartTime = DicomTime("ScheduledProcedureStepStartTime")
    modality = DicomText("Modality", validate=validate_modality)
    scheduledStationAETitle = DicomText("ScheduledStationAETitle", validate=NOT_EMPTY)
    scheduledStationName = DicomText("ScheduledStationName")
    scheduledProcedureStepLocation = DicomText("ScheduledProcedureStepLocation")
    scheduledProcedureStepID = DicomText("ScheduledProcedureStepID", validate=NOT_EMPTY)
    scheduledProcedureStepDescription = DicomText("ScheduledProcedureStepDescription")
    performingPhysician = DicomText("ScheduledPerformingPhysicianName")

    @validates_schema
    def check_aliases(self, data: dict[str, Any], **kwargs: Any) -> None:
        for first, second in (DATE_ALIASES, TIME_ALIASES):
            if first in data and second in data and data[first] != data[second]:
                raise ValidationError(
                    f"Conflicts with {first}. Send only one of {first} and {second}.",
                    second,
                )


class WorklistSampleSchema(WorklistSchema):
    """Body of ``POST /api/orthanc/worklists/sample``: optional overrides."""

    patientId = DicomText("PatientID", validate=NOT_EMPTY)
    patientName = DicomText("PatientName", validate=NOT_EMPTY)


class WorklistInstanceSchema(StrictSchema):
    """Body of ``POST /api/orthanc/worklists/{filename}/instances``.

    Patient, accession number and Study Instance UID come from the entry, so
    they cannot be overridden here. The other fields override what the entry
    supplies.
    """

    removeWorklist = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Delete the worklist entry once the instance is written"
        },
    )
    modality = DicomText("Modality", validate=validate_modality)
    studyDescription = DicomText("StudyDescription")
    seriesDescription = DicomText("SeriesDescription")
    institutionName = DicomText("InstitutionName")
    performingPhysicianName = DicomText("PerformingPhysicianName")
    studyDate = DicomDate("StudyDate")
    studyTime = DicomTime("StudyTime")
    seriesNumber = DicomInteger("SeriesNumber")
    instanceNumber = DicomInteger("InstanceNumber")
    stationName = DicomText("StationName")
    bodyPartExamined = DicomText("BodyPartExamined")
    seriesInstanceUID = DicomUID("SeriesInstanceUID")


class WorklistCleanupSchema(StrictSchema):
    """Body of ``POST /api/orthanc/worklists/cleanup``."""

    daysOld = fields.Integer(
        strict=True,
        load_default=30,
        validate=validate.Range(
            0,
            MAX_DAYS_OLD,
            error=f"Must be a whole number of days from 0 to {MAX_DAYS_OLD}.",
        ),
        metadata={
            "description": "Remove entries last written more than this many days ago"
        },
    )


class WorklistQuery(PageQuery):
    """Filters and paging of ``GET /api/orthanc/worklists``."""

    date = DicomDate(
        "ScheduledProcedureStepStartDate",
        metadata={"description": "Scheduled date, YYYYMMDD or YYYY-MM-DD"},
    )
    dateFrom = DicomDate(
        "ScheduledProcedureStepStartDate",
        metadata={"description": "First scheduled date of a range, inclusive"},
    )
    dateTo = DicomDate(
        "ScheduledProcedureStepStartDate",
        metadata={"description": "Last scheduled date of a range, inclusive"},
    )
    modality = DicomText("Modality")
    scheduledStationAETitle = DicomText("ScheduledStationAETitle")
    patientId = DicomText("PatientID")
    accessionNumber = DicomText("AccessionNumber")

    @validates_schema
    def check_dates(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "date" in data and ("dateFrom" in data or "dateTo" in data):
            raise ValidationError(
                "Send either date or the range dateFrom and dateTo, not both.", "date"
            )
        if data.get("dateFrom", "") > data.get("dateTo", "99999999"):
            raise ValidationError("Must not be after dateTo.", "dateFrom")
