"""Validation of stored files: required elements, value representations, then the IOD check."""

from __future__ import annotations

import re
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import config, dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from . import dcmtk
from .iod import IodReport, IodValidator
from .value_checks import check_transfer_syntax, check_values

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

# Why each required element matters, for the message when it is missing.
REQUIRED_REASONS = {
    "StudyInstanceUID": "every instance needs it to be filed in a study, and a PACS rejects the file without it.",
    "SeriesInstanceUID": "every instance needs it to be filed in a series, and a PACS rejects the file without it.",
    "SOPInstanceUID": "every instance needs it as its unique identifier, and a PACS rejects the file without it.",
    "SOPClassUID": "it names the kind of object (IOD), so the IOD check cannot run without it.",
    "PatientID": "it identifies the patient, and a PACS files the study under it.",
}

# A top-level element line of dcmdump: no indentation, since items of a
# sequence are indented. The value is matched greedily, so a "#" inside a
# value cannot end it.
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
    # dcmdump ends lines with "\n" only. str.splitlines would also split at
    # characters such as U+2028 inside a value of a file written elsewhere.
    for line in text.split("\n"):
        match = _ELEMENT_LINE.match(line.rstrip("\r"))
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
    """Check ``path`` for the required elements, its values and its IOD.

    ``isValid`` is true only when the file is complete DICOM, every required
    element has a value, every value fits its VR and the IOD check ran and
    found no error. ``problems`` words each defect for an operator.
    """
    # dcmdump runs in a second thread while pydicom and dicom-validator check
    # the file in this one, so a request takes about as long as the slower
    # of the two instead of their sum.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcmdump") as pool:
        dumping = pool.submit(_dump_or_error, path, timeout)
        dataset, read_problem = read_dataset(path)
        report = iod.validate(path) if dataset is not None else None
        dump, dump_error = dumping.result()

    if dataset is None or report is None:
        return _unreadable(path, read_problem, dump)

    problems: list[str] = []
    if dump_error:
        problems.append(
            f"{path.name} is truncated or corrupt: the data ends before the data set "
            f"is complete (DCMTK: {dump_error}). Export or send the file again."
        )
        present = {keyword: _has_dataset_value(dataset, keyword) for keyword in REQUIRED_ELEMENTS.values()}
    else:
        elements = parse_dump(dump)
        present = {
            keyword: _has_value(elements.get(tag)) for tag, keyword in REQUIRED_ELEMENTS.items()
        }

    missing = [keyword for keyword, has_value in present.items() if not has_value]
    problems.extend(_missing_message(dataset, keyword) for keyword in missing)

    value_errors = [*check_transfer_syntax(path, dataset), *check_values(dataset)]
    problems.extend(error.message for error in value_errors)

    if not report.ran:
        problems.append(report.reason)
    reported = {str(Tag(tag_for_keyword(keyword) or 0)) for keyword in missing}
    problems.extend(
        finding.message
        for finding in report.findings
        if finding.severity == "error" and not (finding.tag in reported and " / " not in finding.keyword)
    )

    return {
        "filename": path.name,
        "isValid": not dump_error
        and not missing
        and not value_errors
        and report.ran
        and report.errors == 0,
        "hasStudyInstanceUID": present["StudyInstanceUID"],
        "hasSeriesInstanceUID": present["SeriesInstanceUID"],
        "hasSOPInstanceUID": present["SOPInstanceUID"],
        "missingTags": missing,
        "problems": problems,
        "valueErrors": [error.as_dict() for error in value_errors],
        "iod": report.as_dict(),
        "details": dump,
    }


def _dump_or_error(path: Path, timeout: float) -> tuple[str, str]:
    """Return the dcmdump text and, if dcmdump failed, DCMTK's error message."""
    try:
        return dcmtk.dcmdump(path, timeout), ""
    except dcmtk.DcmtkNotFound:
        raise
    except dcmtk.DcmtkError as error:
        return error.stderr, _dcmtk_errors(error.stderr) or error.message


def read_dataset(path: Path) -> tuple[Dataset | None, str]:
    """Read ``path`` with pydicom and return the dataset, or ``None`` and the reason.

    Values are not validated while reading, because :func:`check_values`
    reports each invalid value with its tag. pydicom stops quietly at the
    end of a truncated file, so the dataset may be incomplete.
    """
    # NOTE: reading_validation_mode is process-wide in pydicom 3. dicom-validator
    # sets it to IGNORE as well whenever it reads a file.
    config.settings.reading_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            # pydicom warns, for example, when the dataset's VR encoding is
            # not the one that TransferSyntaxUID names, and reads on.
            # check_transfer_syntax reports that case.
            warnings.simplefilter("ignore")
            return dcmread(path), ""
    except RecursionError:
        return None, (
            f"{path.name} could not be read as DICOM: its sequences are nested "
            "more deeply than pydicom can read (it reads each level with a "
            "recursive call). Check how the file was made."
        )
    except InvalidDicomError:
        return None, (
            f"{path.name} is not a DICOM file: it has no 'DICM' marker after the "
            "128-byte preamble and no DICOM file meta information. Check that the "
            "right file was uploaded."
        )
    except (OSError, EOFError, ValueError, struct.error) as error:
        return None, (
            f"{path.name} could not be read as DICOM ({error}). The file is "
            "corrupt or truncated; export or send it again."
        )


def _unreadable(path: Path, reason: str, dump: str) -> dict[str, Any]:
    missing = list(REQUIRED_ELEMENTS.values())
    return {
        "filename": path.name,
        "isValid": False,
        "hasStudyInstanceUID": False,
        "hasSeriesInstanceUID": False,
        "hasSOPInstanceUID": False,
        "missingTags": missing,
        "problems": [reason],
        "valueErrors": [],
        "iod": IodReport(
            ran=False, reason="IOD validation did not run: the file is not readable as DICOM."
        ).as_dict(),
        "details": dump,
    }


def _missing_message(dataset: Dataset, keyword: str) -> str:
    tag = tag_for_keyword(keyword) or 0
    state = "present but empty" if keyword in dataset else "missing"
    return f"{keyword} {Tag(tag)} is {state}; {REQUIRED_REASONS[keyword]}"


def _has_dataset_value(dataset: Dataset, keyword: str) -> bool:
    value = dataset.get(keyword)
    return value is not None and str(value).strip() != ""


def _dcmtk_errors(stderr: str) -> str:
    """Return DCMTK's error lines without the "E:" marker and the file path.

    Lines about the element that failed are kept. dcmdump's closing summary
    ("dcmdump: … reading file: PATH") is used only when there is no such line.
    """
    errors = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("E:"):
            errors.append(line.removeprefix("E:").strip().split(": reading file:")[0])
    details = [line for line in errors if not line.startswith("dcmdump:")]
    chosen = details or [line.removeprefix("dcmdump:").strip() for line in errors]
    return "; ".join(dict.fromkeys(chosen))


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
