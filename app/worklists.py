"""Modality worklist entries: request data to ``.wl`` files and back.

Each entry is one DICOM file that Orthanc's ModalityWorklists plugin serves
to modalities that send a Modality Worklist C-FIND. The attributes follow the
Modality Worklist Information Model (PS3.4 K.6): patient and order attributes
at the top level, the scheduled procedure step inside one item of the
Scheduled Procedure Step Sequence (0040,0100).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .builder import DEFAULT_MODALITY
from .dump import DumpRenderer, convert
from .storage import FileStore, StoredFile
from .uids import generate_uid

logger = logging.getLogger(__name__)

WORKLIST_TEMPLATE = "worklist.dump.j2"

# Scheduled Procedure Step Status (0040,0020) of a new entry (PS3.3 C.4.10).
SCHEDULED = "SCHEDULED"

# An accession number becomes the filename only when it is this safe: ASCII
# letters, digits, '_', '.' and '-', starting with a letter or digit.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}")

# Request fields that fill top-level elements, and their keywords.
TOP_LEVEL_FIELDS = {
    "patientId": "PatientID",
    "patientName": "PatientName",
    "patientBirthDate": "PatientBirthDate",
    "patientSex": "PatientSex",
    "accessionNumber": "AccessionNumber",
    "studyInstanceUID": "StudyInstanceUID",
    "requestedProcedureID": "RequestedProcedureID",
    "requestedProcedureDescription": "RequestedProcedureDescription",
    "requestedProcedurePriority": "RequestedProcedurePriority",
    "referringPhysician": "ReferringPhysicianName",
    "requestingPhysician": "RequestingPhysician",
    "institutionName": "InstitutionName",
    "departmentName": "InstitutionalDepartmentName",
}

# Request fields that fill elements of the Scheduled Procedure Step item.
STEP_FIELDS = {
    "modality": "Modality",
    "scheduledStationAETitle": "ScheduledStationAETitle",
    "scheduledStationName": "ScheduledStationName",
    "scheduledProcedureStepLocation": "ScheduledProcedureStepLocation",
    "scheduledDate": "ScheduledProcedureStepStartDate",
    "scheduledTime": "ScheduledProcedureStepStartTime",
    "scheduledProcedureStepID": "ScheduledProcedureStepID",
    "scheduledProcedureStepDescription": "ScheduledProcedureStepDescription",
    "performingPhysician": "ScheduledPerformingPhysicianName",
    "scheduledProcedureStepStatus": "ScheduledProcedureStepStatus",
}


@dataclass
class WrittenWorklist:
    """A worklist file that was just written, and the order it carries."""

    path: Path
    size: int
    patient_id: str
    accession_number: str
    study_instance_uid: str
    specific_character_set: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "filename": self.path.name,
            "filepath": str(self.path),
            "size": self.size,
            "accessionNumber": self.accession_number,
            "patientId": self.patient_id,
            "studyInstanceUID": self.study_instance_uid,
            "specificCharacterSet": self.specific_character_set,
            "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }


class WorklistWriter:
    """Writes worklist entries into a :class:`FileStore` with ``dump2dcm``."""

    def __init__(
        self,
        store: FileStore,
        renderer: DumpRenderer,
        uid_root: str,
        timeout: float,
        dictionary: Path | None = None,
    ) -> None:
        self.store = store
        self.renderer = renderer
        self.uid_root = uid_root
        self.timeout = timeout
        # The data dictionary that dump2dcm loads (see app.template_dictionary).
        self.dictionary = dictionary

    def create(self, body: dict[str, Any]) -> WrittenWorklist:
        """Write a new entry from a validated request body.

        The filename is the accession number with ``.wl`` when that is a safe
        name and no entry has it yet, and a new ``worklist_<digits>.wl``
        otherwise. An existing entry is never replaced.
        """
        top, step = self.dataset(body)
        temporary, charset = self._write(top, step)
        # Measured before publishing, because a delete may follow at once.
        size = temporary.stat().st_size
        preferred = _preferred_filename(top["AccessionNumber"])
        if preferred is None:
            final = self.store.publish(temporary)
        else:
            final = self.store.publish_preferred(temporary, preferred)

        logger.info(
            "Wrote worklist %s (accession number %s, %s on %s)",
            final.name, top["AccessionNumber"], step["Modality"],
            step["ScheduledProcedureStepStartDate"],
        )  # fmt: skip
        return self._written(final, size, top, charset)

    def replace(self, path: Path, body: dict[str, Any]) -> WrittenWorklist:
        """Replace the entry at ``path`` atomically with a new one from ``body``.

        When ``body`` leaves out ``studyInstanceUID`` or ``accessionNumber``,
        the stored values are kept, so images already made for the order stay
        in its study. The filename stays the same even when the accession
        number changes. An unreadable stored file is replaced without keeping
        anything.
        """
        try:
            stored = read_entry(path)
        except UnreadableWorklist as error:
            logger.warning("Replacing unreadable worklist: %s", error)
            stored = {}
        stored_order = {
            field: stored[field]
            for field in ("studyInstanceUID", "accessionNumber")
            if stored.get(field)
        }
        top, step = self.dataset({**stored_order, **body})
        temporary, charset = self._write(top, step)
        size = temporary.stat().st_size
        final = self.store.replace(temporary, path.name)

        logger.info(
            "Replaced worklist %s (accession number %s)",
            final.name,
            top["AccessionNumber"],
        )
        return self._written(final, size, top, charset)

    def dataset(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Map a request body to the top-level and step element values.

        Absent values get defaults: the scheduled date and time are now, the
        accession number and Study Instance UID are generated, and the
        requested procedure and step IDs are the accession number. Other
        absent elements, Scheduled Station AE Title included, are written empty.
        """
        body = _merge_aliases(body)
        now = datetime.now()
        top: dict[str, Any] = {
            keyword: body.get(field, "") for field, keyword in TOP_LEVEL_FIELDS.items()
        }
        step: dict[str, Any] = {
            keyword: body.get(field, "") for field, keyword in STEP_FIELDS.items()
        }

        if not top["AccessionNumber"]:
            top["AccessionNumber"] = _new_accession_number()
        if not top["StudyInstanceUID"]:
            top["StudyInstanceUID"] = generate_uid(self.uid_root)
        if not top["RequestedProcedureID"]:
            top["RequestedProcedureID"] = top["AccessionNumber"]
        if not top["RequestedProcedureDescription"]:
            top["RequestedProcedureDescription"] = body.get("studyDescription", "")

        if not step["Modality"]:
            step["Modality"] = DEFAULT_MODALITY
        if not step["ScheduledProcedureStepStartDate"]:
            step["ScheduledProcedureStepStartDate"] = now.strftime("%Y%m%d")
        if not step["ScheduledProcedureStepStartTime"]:
            step["ScheduledProcedureStepStartTime"] = now.strftime("%H%M%S")
        if not step["ScheduledProcedureStepID"]:
            step["ScheduledProcedureStepID"] = top["RequestedProcedureID"]
        step["ScheduledProcedureStepStatus"] = SCHEDULED
        return top, step

    def _write(
        self, top: dict[str, Any], step: dict[str, Any]
    ) -> tuple[Path, str | None]:
        """Render and convert an entry into a temporary file that no listing shows."""
        dump, charset = self.renderer.render(
            WORKLIST_TEMPLATE, {"ds": top, "sps": step}
        )
        return convert(dump, self.store, self.timeout, self.dictionary), charset

    def _written(
        self, path: Path, size: int, top: dict[str, Any], charset: str | None
    ) -> WrittenWorklist:
        return WrittenWorklist(
            path=path,
            size=size,
            patient_id=top["PatientID"],
            accession_number=top["AccessionNumber"],
            study_instance_uid=top["StudyInstanceUID"],
            specific_character_set=charset,
        )


class UnreadableWorklist(Exception):
    """A file in the worklist folder that is not a readable DICOM file."""


def read_entry(path: Path) -> dict[str, Any]:
    """Read a worklist file into the field names of the request body.

    Dates and times are returned in DICOM form (``YYYYMMDD``, ``HHMMSS``),
    person names as ``FAMILY^GIVEN`` text, and absent elements as ``""``.

    Raises
    ------
    UnreadableWorklist
        If the file is not a DICOM file that pydicom can read.
    """
    try:
        dataset = dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as error:
        raise UnreadableWorklist(
            f"{path.name} is not a readable DICOM file: {error}"
        ) from error

    sequence = dataset.get("ScheduledProcedureStepSequence")
    step = sequence[0] if sequence else Dataset()
    entry: dict[str, Any] = {
        field: _text(dataset, keyword) for field, keyword in TOP_LEVEL_FIELDS.items()
    }
    entry.update(
        {field: _text(step, keyword) for field, keyword in STEP_FIELDS.items()}
    )
    entry["specificCharacterSet"] = _text(dataset, "SpecificCharacterSet") or None
    return entry


def describe(stored: StoredFile) -> dict[str, Any]:
    """Return a listed file's metadata with the fields of its entry.

    A file that cannot be read is listed with ``readable`` false and the
    reason, so that one broken file does not hide the others.
    """
    description: dict[str, Any] = stored.as_dict()
    try:
        description.update(read_entry(stored.path))
        description["readable"] = True
    except UnreadableWorklist as error:
        logger.warning("Listing unreadable worklist file: %s", error)
        description["readable"] = False
        description["error"] = str(error)
    return description


def stored_file(path: Path) -> StoredFile:
    """Return the listing metadata of the worklist file at ``path``."""
    stat = path.stat()
    return StoredFile(
        filename=path.name,
        path=path,
        size=stat.st_size,
        created=getattr(stat, "st_birthtime", stat.st_ctime),
        modified=stat.st_mtime,
    )


def matches(entry: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Return whether a described entry passes every filter of a list query."""
    if not entry.get("readable"):
        return not _has_filters(filters)

    scheduled = entry["scheduledDate"]
    if "date" in filters and scheduled != filters["date"]:
        return False
    if "dateFrom" in filters and not (scheduled and scheduled >= filters["dateFrom"]):
        return False
    if "dateTo" in filters and not (scheduled and scheduled <= filters["dateTo"]):
        return False

    for field in (
        "modality",
        "scheduledStationAETitle",
        "patientId",
        "accessionNumber",
    ):
        if field in filters and entry[field] != filters[field]:
            return False
    return True


def filter_entries(
    files: Iterable[StoredFile], filters: dict[str, Any]
) -> list[dict[str, Any]]:
    """Describe ``files`` and keep those that pass ``filters``."""
    described = (describe(stored) for stored in files)
    return [entry for entry in described if matches(entry, filters)]


def _has_filters(filters: dict[str, Any]) -> bool:
    return any(key not in ("limit", "offset") for key in filters)


def _merge_aliases(body: dict[str, Any]) -> dict[str, Any]:
    merged = dict(body)
    long_date = merged.pop("scheduledProcedureStepStartDate", None)
    long_time = merged.pop("scheduledProcedureStepStartTime", None)
    if long_date is not None:
        merged.setdefault("scheduledDate", long_date)
    if long_time is not None:
        merged.setdefault("scheduledTime", long_time)
    return merged


def _preferred_filename(accession_number: str) -> str | None:
    if _SAFE_NAME.fullmatch(accession_number):
        return f"{accession_number}.wl"
    return None


def _new_accession_number() -> str:
    # "A" and 15 random decimal digits: 16 characters, the SH maximum.
    return f"A{uuid.uuid4().int % 10**15:015d}"


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None or value == "":
        return ""
    return str(value)
