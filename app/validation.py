"""Validation of stored files: required elements from ``dcmdump``, then the IOD check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import dcmtk
from .iod import IodReport, IodValidator

# Elements that Orthanc needs to store an instance, and that every file of
# this service carries; PatientID and SOPClassUID identify the patient and
# the IOD. Keyed by tag as dcmdump prints it.
REQUIRED_ELEMENTS = {
    "0020,000d": "StudyInstanceUID",
    "0020,000e": "SeriesInstanceUID",
    "0008,0018": "SOPInstanceUID",
    "0008,0016": "SOPClassUID",
    "0010,0020": "PatientID",
}

# A top-level element line of dcmdump: no indentation, since items of a
# sequence are indented. Group 0002 (the file meta information) is kept
# apart from the dataset.
# The value is matched greedily, so a "#" inside a value cannot end it.
_ELEMENT_LINE = re.compile(
    r"^\(([0-9a-fA-F]{4}),([0-9a-fA-F]{4})\) ([A-Z?]{2}) (.*)\s+#\s*(\d+|\?),\s*(\d+)\s+\S+$"
)


@dataclass
class DumpElement:
    """One top-level element as ``dcmdump`` printed it."""

    tag: str
    vr: str
    value: str | None
    length: int


def parse_dump(text: str) -> dict[str, DumpElement]:
    """Return the top-level elements of a ``dcmdump`` text, keyed by ``gggg,eeee``.

    Items of sequences are skipped. A value that dcmdump shows as ``(no value
    available)`` becomes ``None``.
    """
    elements: dict[str, DumpElement] = {}
    for line in text.splitlines():
        match = _ELEMENT_LINE.match(line)
        if match is None:
            continue
        group, element, vr, raw, length, _multiplicity = match.groups()
        tag = f"{group.lower()},{element.lower()}"
        value = _dump_value(raw)
        elements[tag] = DumpElement(
            tag, vr, value, int(length) if length.isdigit() else 0
        )
    return elements


def validate_file(path: Path, iod: IodValidator, timeout: float) -> dict[str, Any]:
    """Check ``path`` for the required elements and against its IOD.

    ``isValid`` is true only when every required element has a value and the
    IOD check ran and found no error.
    """
    try:
        dump = dcmtk.dcmdump(path, timeout)
    except dcmtk.DcmtkNotFound:
        raise
    except dcmtk.DcmtkError as error:
        return {
            "filename": path.name,
            "isValid": False,
            "hasStudyInstanceUID": False,
            "hasSeriesInstanceUID": False,
            "hasSOPInstanceUID": False,
            "missingTags": list(REQUIRED_ELEMENTS.values()),
            "problems": [f"dcmdump could not read the file: {error.message}"],
            "iod": IodReport(ran=False, reason="The file is not readable as DICOM.").as_dict(),
            "details": error.stderr,
        }

    elements = parse_dump(dump)
    present = {
        keyword: _has_value(elements.get(tag)) for tag, keyword in REQUIRED_ELEMENTS.items()
    }
    missing = [keyword for keyword, has_value in present.items() if not has_value]
    problems = [f"{keyword} is missing or empty." for keyword in missing]

    report = iod.validate(path)
    if not report.ran:
        problems.append(report.reason)
    problems.extend(finding.message for finding in report.findings if finding.severity == "error")

    return {
        "filename": path.name,
        "isValid": not missing and report.ran and report.errors == 0,
        "hasStudyInstanceUID": present["StudyInstanceUID"],
        "hasSeriesInstanceUID": present["SeriesInstanceUID"],
        "hasSOPInstanceUID": present["SOPInstanceUID"],
        "missingTags": missing,
        "problems": problems,
        "iod": report.as_dict(),
        "details": dump,
    }


def _has_value(element: DumpElement | None) -> bool:
    return element is not None and element.value is not None and element.value.strip() != ""


def _dump_value(raw: str) -> str | None:
    raw = raw.strip()
    if raw.startswith("(no value"):
        return None
    if raw.startswith("[") and raw.endswith("]"):
        return raw[1:-1]
    if raw.startswith("="):
        return raw[1:]
    return raw
