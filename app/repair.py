"""Repair of imported files: generated UIDs, empty type 2 elements, file meta information.

Changes are written with ``dcmodify``. Each repaired file gets one new item
in Original Attributes Sequence (0400,0561), as PS3.3 section C.12.1.1.9
prescribes for modified instances. The item contains Modified Attributes
Sequence (0400,0550) with the previous value of every changed element, and
the date and time, system, reason and source of the change. An element
that was absent is recorded there with an empty value.

File meta information (group 0002) is not part of the dataset, so its
corrections appear in the response only. ``dcmodify`` rebuilds it from the
dataset whenever it writes a file.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    EncapsulatedPDFStorage,
    SecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
)

from . import dcmtk
from .inspection import Inspection, element_text
from .uidmap import UidMap
from .uids import generate_uid

logger = logging.getLogger(__name__)

REASONS = ("CORRECT", "COERCE")

# Specific Character Set (0008,0005) defined term for UTF-8, PS3.3 section
# C.12.1.1.2.
UTF8 = "ISO_IR 192"

# Modality (0008,0060) is type 1, and can be filled only where the SOP Class
# leaves one choice (PS3.3 sections A.8, A.32.4 and A.45.1).
MODALITY_BY_SOP_CLASS = {
    str(SecondaryCaptureImageStorage): "OT",
    str(VLPhotographicImageStorage): "XC",
    str(EncapsulatedPDFStorage): "DOC",
}

ORIGINAL_ATTRIBUTES = "(0400,0561)"
MODIFIED_ATTRIBUTES = "(0400,0550)"
MODIFICATION_DATETIME = "(0400,0562)"
MODIFYING_SYSTEM = "(0400,0563)"
SOURCE_OF_PREVIOUS_VALUES = "(0400,0564)"
REASON_FOR_MODIFICATION = "(0400,0565)"


@dataclass
class Change:
    """One element that repair set, with its previous value."""

    keyword: str
    value: str
    original: str | None
    reason: str
    in_dataset: bool = True

    @property
    def tag(self) -> str:
        number = tag_for_keyword(self.keyword) or 0
        return str(Tag(number))

    @property
    def tag_path(self) -> str:
        return self.tag.lower()

    def as_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "keyword": self.keyword,
            "action": "added" if self.original is None else "replaced",
            "originalValue": self.original,
            "newValue": self.value,
            "reason": self.reason,
            "recordedInOriginalAttributesSequence": self.in_dataset,
        }


class RepairError(Exception):
    """A planned change that cannot be written into the file, with the reason as message."""


@dataclass
class RepairContext:
    """State that the files of one upload share while they are repaired."""

    upload_id: str
    uid_root: str
    uid_map: UidMap
    reason: str = "CORRECT"
    source: str = ""
    modifying_system: str = "dicom-service"
    known_studies: dict[tuple[str, ...], str] = field(default_factory=dict)
    known_series: dict[tuple[str, ...], str] = field(default_factory=dict)


def study_key(dataset: Dataset, upload_id: str) -> tuple[str, ...]:
    """Return the key that files of one study share.

    PatientID and AccessionNumber identify a study. Without an accession
    number, PatientID, StudyDate and StudyDescription do. Without either a
    date or an accession number the key is limited to the upload, so that
    undated files of a patient from different uploads are not merged.
    """
    patient = element_text(dataset, "PatientID")
    accession = element_text(dataset, "AccessionNumber")
    date = element_text(dataset, "StudyDate")
    description = element_text(dataset, "StudyDescription")
    if accession:
        return ("accession", patient, accession)
    if date:
        return ("date", patient, date, description)
    return ("upload", upload_id, patient, description)


def series_key(dataset: Dataset, study_uid: str) -> tuple[str, ...]:
    """Return the key that files of one series share: study, SeriesNumber, Modality."""
    return (
        study_uid,
        element_text(dataset, "SeriesNumber"),
        element_text(dataset, "Modality"),
    )


def remember_uids(inspections: list[Inspection], context: RepairContext) -> None:
    """Record the UIDs that some files of the upload carry, so that the others join them."""
    for inspection in inspections:
        dataset = inspection.dataset
        study = element_text(dataset, "StudyInstanceUID")
        if not study:
            continue
        context.known_studies.setdefault(study_key(dataset, context.upload_id), study)
        series = element_text(dataset, "SeriesInstanceUID")
        if series:
            context.known_series.setdefault(series_key(dataset, study), series)


def is_storage_sop_class(value: str) -> bool:
    """Return whether pydicom's UID dictionary lists ``value`` as a Storage SOP Class.

    DCMTK writes a placeholder of its own into the file meta information of a
    dataset without SOP Class UID; such a value must not be copied back.
    """
    uid = UID(value)
    # Names such as "Digital X-Ray Image Storage - For Presentation" carry a suffix.
    return uid.type == "SOP Class" and "Storage" in uid.name


def plan_changes(inspection: Inspection, data: bytes, context: RepairContext) -> list[Change]:
    """List the changes that make the inspected file acceptable, without writing them."""
    dataset = inspection.dataset
    meta = inspection.meta
    changes: list[Change] = []

    def original(keyword: str) -> str | None:
        return element_text(dataset, keyword) if keyword in dataset else None

    sop_class = element_text(dataset, "SOPClassUID")
    if not sop_class and is_storage_sop_class(element_text(meta, "MediaStorageSOPClassUID")):
        sop_class = element_text(meta, "MediaStorageSOPClassUID")
        changes.append(
            Change("SOPClassUID", sop_class, original("SOPClassUID"),
                   "Copied from MediaStorageSOPClassUID (0002,0002).")
        )  # fmt: skip

    study = element_text(dataset, "StudyInstanceUID")
    if not study:
        key = study_key(dataset, context.upload_id)
        study, reason = _uid_for("study", key, context.known_studies, context)
        changes.append(Change("StudyInstanceUID", study, original("StudyInstanceUID"), reason))

    if not element_text(dataset, "SeriesInstanceUID"):
        key = series_key(dataset, study)
        series, reason = _uid_for("series", key, context.known_series, context)
        changes.append(Change("SeriesInstanceUID", series, original("SeriesInstanceUID"), reason))

    if not element_text(dataset, "SOPInstanceUID"):
        changes.append(_sop_instance_change(inspection, data, context, original("SOPInstanceUID")))

    modality = MODALITY_BY_SOP_CLASS.get(sop_class)
    if modality and not element_text(dataset, "Modality"):
        changes.append(
            Change("Modality", modality, original("Modality"),
                   f"The only Modality that SOP Class {sop_class} allows.")
        )  # fmt: skip

    for keyword in inspection.missing_type2:
        changes.append(Change(keyword, "", None, "Type 2 element added with an empty value."))

    changes += _meta_changes(inspection, changes)
    charset = _character_set_change(dataset, changes, context)
    if charset is not None:
        changes.append(charset)
    return changes


def apply_changes(
    path: Path, inspection: Inspection, changes: list[Change], context: RepairContext, timeout: float
) -> None:
    """Write ``changes`` and their audit item into the file at ``path`` with ``dcmodify``."""
    dataset_changes = [change for change in changes if change.in_dataset]
    insertions = [(change.tag_path, change.value) for change in dataset_changes]
    if dataset_changes:
        insertions += _audit_item(inspection.dataset, dataset_changes, context)

    if any(change.keyword == "SpecificCharacterSet" for change in changes):
        _convert_to_utf8(path, inspection, timeout)

    # NOTE: dcmodify decodes the dataset with the transfer syntax it detects
    # when the meta information names the wrong one, and writes it back in
    # that same encoding with corrected meta information.
    dcmtk.dcmodify(path, insertions, inspection.syntax_mismatch, timeout)
    logger.info(
        "Repaired %s: %s",
        inspection.name, ", ".join(change.keyword for change in changes),
    )  # fmt: skip


def _uid_for(
    kind: str,
    key: tuple[str, ...],
    known: dict[tuple[str, ...], str],
    context: RepairContext,
) -> tuple[str, str]:
    if key in known:
        return known[key], f"Taken from another file of this upload with the same {kind} key."

    uid, created = context.uid_map.uid_for(kind, key, lambda: generate_uid(context.uid_root))
    known[key] = uid
    source = "Generated" if created else "Reused, generated earlier"
    return uid, f"{source} for the {kind} key {_describe_key(kind, key)}."


def _sop_instance_change(
    inspection: Inspection, data: bytes, context: RepairContext, previous: str | None
) -> Change:
    meta_uid = element_text(inspection.meta, "MediaStorageSOPInstanceUID")
    if meta_uid:
        return Change("SOPInstanceUID", meta_uid, previous,
                      "Copied from MediaStorageSOPInstanceUID (0002,0003).")  # fmt: skip

    # The key is the content of the uploaded file, so uploading the same file
    # again yields the same SOP Instance UID instead of a duplicate instance.
    digest = hashlib.sha256(data).hexdigest()
    uid, created = context.uid_map.uid_for(
        "instance", ("sha256", digest), lambda: generate_uid(context.uid_root)
    )
    source = "Generated" if created else "Reused, generated earlier"
    return Change("SOPInstanceUID", uid, previous,
                  f"{source} for the file content with SHA-256 {digest}.")  # fmt: skip


def _meta_changes(inspection: Inspection, planned: list[Change]) -> list[Change]:
    """List the file meta information that dcmodify will write differently.

    dcmodify copies MediaStorageSOPClassUID and MediaStorageSOPInstanceUID
    from the repaired dataset, and names the transfer syntax that it read
    the dataset with.
    """
    new_values = {change.keyword: change.value for change in planned}

    def repaired(keyword: str) -> str:
        return new_values.get(keyword) or element_text(inspection.dataset, keyword)

    expected = {
        "MediaStorageSOPClassUID": repaired("SOPClassUID"),
        "MediaStorageSOPInstanceUID": repaired("SOPInstanceUID"),
    }
    encoding = inspection.encoding
    if encoding is not None and (inspection.syntax_mismatch or not inspection.has_meta):
        expected["TransferSyntaxUID"] = encoding.transfer_syntax

    if inspection.has_meta:
        reason = "Rewritten to match the dataset."
    else:
        reason = "Written in the new file meta information."

    changes: list[Change] = []
    for keyword, value in expected.items():
        current = element_text(inspection.meta, keyword) if inspection.has_meta else None
        if value and value != current:
            changes.append(Change(keyword, value, current or None, reason, in_dataset=False))
    return changes


def _character_set_change(
    dataset: Dataset, changes: list[Change], context: RepairContext
) -> Change | None:
    """Plan the conversion to UTF-8 when a value to write is not ASCII.

    dcmodify writes the bytes of its arguments unchanged, and they are UTF-8.
    So unless the file is already ISO_IR 192, the whole dataset is converted
    to it before dcmodify writes. The change is not recorded in Modified
    Attributes Sequence, because (0008,0005) inside that item would declare
    the character set of the item itself.
    """
    written = [change for change in changes if change.in_dataset]
    if not written:
        return None

    texts = {
        "SourceOfPreviousValues": context.source,
        "ReasonForTheAttributeModification": context.reason,
        "ModifyingSystem": context.modifying_system,
    }
    for change in written:
        texts[change.keyword] = change.value
        texts[f"previous {change.keyword}"] = change.original or ""
    non_ascii = [name for name, text in texts.items() if not text.isascii()]
    if not non_ascii:
        return None

    declared = dataset.get("SpecificCharacterSet")
    terms = [declared] if isinstance(declared, str) else list(declared or [])
    if [term.strip() for term in terms] == [UTF8]:
        return None

    original = "\\".join(terms) if "SpecificCharacterSet" in dataset else None
    reason = (
        f"Every text value was converted to UTF-8, so that the non-ASCII "
        f"{', '.join(non_ascii)} could be written. The characters of every value "
        "stay the same."
    )
    return Change("SpecificCharacterSet", UTF8, original, reason, in_dataset=False)


def _convert_to_utf8(path: Path, inspection: Inspection, timeout: float) -> None:
    """Rewrite the file at ``path`` in UTF-8 with ``dcmconv``.

    Raises
    ------
    RepairError
        If a text value of the file does not decode with its declared
        character set, such as a non-ASCII byte without Specific Character Set.
    """
    converted = path.with_name(f"{path.name}.utf8")
    try:
        dcmtk.dcmconv_utf8(path, converted, inspection.syntax_mismatch, timeout)
        converted.replace(path)
    except (dcmtk.DcmtkNotFound, dcmtk.DcmtkTimeout):
        raise
    except dcmtk.DcmtkError as error:
        reasons = [
            line.strip()[2:].strip().replace(f": processing file: {path}", "")
            for line in error.stderr.splitlines()
            if line.strip()[:2] in ("E:", "F:")
        ]
        raise RepairError(
            "A value to write is not ASCII, so the file must be converted to UTF-8 "
            f"(ISO_IR 192), but dcmconv could not convert it: {'; '.join(reasons)}. "
            "Correct the file's Specific Character Set (0008,0005), or import it "
            "with an ASCII source."
        ) from error
    finally:
        converted.unlink(missing_ok=True)


def _audit_item(
    dataset: Dataset, changes: list[Change], context: RepairContext
) -> list[tuple[str, str]]:
    """Return the dcmodify insertions of one new Original Attributes Sequence item."""
    index = len(dataset.get("OriginalAttributesSequence") or [])
    item = f"{ORIGINAL_ATTRIBUTES}[{index}]"
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S.%f+0000")

    insertions = [
        (f"{item}.{MODIFIED_ATTRIBUTES}[0].{change.tag_path}", change.original or "")
        for change in changes
    ]
    insertions += [
        (f"{item}.{MODIFICATION_DATETIME}", now),
        (f"{item}.{MODIFYING_SYSTEM}", context.modifying_system),
        (f"{item}.{SOURCE_OF_PREVIOUS_VALUES}", context.source),
        (f"{item}.{REASON_FOR_MODIFICATION}", context.reason),
    ]
    return insertions


def _describe_key(kind: str, key: tuple[str, ...]) -> str:
    if kind == "series":
        return f"StudyInstanceUID={key[0]}, SeriesNumber={key[1]!r}, Modality={key[2]!r}"
    if key[0] == "accession":
        return f"PatientID={key[1]!r}, AccessionNumber={key[2]!r}"
    if key[0] == "date":
        return f"PatientID={key[1]!r}, StudyDate={key[2]!r}, StudyDescription={key[3]!r}"
    return f"PatientID={key[2]!r}, StudyDescription={key[3]!r} within this upload"
