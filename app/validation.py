"""Validation of stored files: required elements, value representations, then the IOD check."""

from __future__ import annotations

import datetime
import re
import struct
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import config, dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import MAX_VALUE_LEN, validate_value

from . import dcmtk
from .inspection import actual_encoding_if_wrong
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

# Why each required element matters, for the message when it is missing.
REQUIRED_REASONS = {
    "StudyInstanceUID": "every instance needs it to be filed in a study, and a PACS rejects the file without it.",
    "SeriesInstanceUID": "every instance needs it to be filed in a series, and a PACS rejects the file without it.",
    "SOPInstanceUID": "every instance needs it as its unique identifier, and a PACS rejects the file without it.",
    "SOPClassUID": "it names the kind of object (IOD), so the IOD check cannot run without it.",
    "PatientID": "it identifies the patient, and a PACS files the study under it.",
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
    reported = {_tag_text(tag_for_keyword(keyword) or 0) for keyword in missing}
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
    return f"{keyword} {_tag_text(tag)} is {state}; {REQUIRED_REASONS[keyword]}"


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


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


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


# Maximum value length of AS in characters, which pydicom 3.0's MAX_VALUE_LEN
# does not list. PN is limited per component group, and the formats of DA, DT
# and TM are checked as a whole.
EXTRA_MAX_LENGTHS = {"AS": 4}
PN_GROUP_MAX = 64

# Allowed content of each VR that pydicom checks by pattern, worded for messages.
VR_RULES = {
    "AE": "up to 16 characters without backslash or control characters",
    "AS": "an age such as 045Y, 012M, 003W or 010D",
    "CS": "uppercase letters, digits, space and underscore",
    "DS": "a decimal number such as 12.5 or -1.2E3",
    "IS": "a whole number between -2147483648 and 2147483647",
    "UI": "digits and dots, with no component starting with 0 unless it is 0",
}

# Bytes read from the start of a file to find the first data element after
# the file meta information, which is a few hundred bytes long in practice.
FILE_HEAD_BYTES = 64 * 1024

TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}

_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
_DATE_TIME = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$"
)


@dataclass
class ValueFinding:
    """One value that does not fit the value representation of its element."""

    tag: str
    keyword: str
    vr: str
    value: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {
            "tag": self.tag,
            "keyword": self.keyword,
            "vr": self.vr,
            "value": self.value,
            "message": self.message,
        }


def check_transfer_syntax(path: Path, dataset: Dataset) -> list[ValueFinding]:
    """Check that TransferSyntaxUID (0002,0010) names the encoding that the dataset uses.

    pydicom reads such a dataset anyway (with a warning), but DCMTK tools
    such as storescu read it with the named transfer syntax.
    """
    meta = getattr(dataset, "file_meta", None)
    declared = meta.get("TransferSyntaxUID") if meta is not None else None
    if not declared:
        return []
    with open(path, "rb") as handle:
        head = handle.read(FILE_HEAD_BYTES)
    actual = actual_encoding_if_wrong(head, str(declared))
    if actual is None:
        return []

    detected = UID(actual.transfer_syntax)
    message = (
        f"TransferSyntaxUID (0002,0010) is {declared} ({UID(declared).name}), but the "
        f"dataset is encoded in {detected} ({detected.name}). DCMTK tools such as "
        "storescu read the dataset with the named transfer syntax, so they misread it "
        "or fail. Download the file and import it again with repair=true, which "
        "corrects the file meta information."
    )
    return [ValueFinding("(0002,0010)", "TransferSyntaxUID", "UI", str(declared), message)]


def check_values(dataset: Dataset) -> list[ValueFinding]:
    """Check every text value of ``dataset``, sequence items included, against its VR.

    Lengths, dates, times and the character rules of each VR are checked, and
    a value is reported once, with the first rule it breaks.
    """
    findings: list[ValueFinding] = []
    for path, element in _walk(dataset):
        if element.VR not in TEXT_VRS or element.value is None:
            continue

        values = _values(element)
        for index, value in enumerate(values, start=1):
            position = f" value {index}" if len(values) > 1 else ""
            label = f"{path}{position}"
            problem = _value_problem(element.VR, value)
            if problem:
                findings.append(
                    ValueFinding(
                        _tag_text(element.tag),
                        path.split(" (")[0],
                        element.VR,
                        value,
                        f"{label} {problem}",
                    )
                )
    return findings


def _walk(dataset: Dataset) -> Iterator[tuple[str, DataElement]]:
    """Yield every element that is not a sequence, depth first, with its path.

    The path names the element and the innermost sequence item that
    contains it. A stack replaces recursion, so any depth of nested sequences works.
    """
    stack: list[tuple[Iterator[DataElement], str]] = [(iter(dataset), "")]
    while stack:
        elements, parent = stack[-1]
        element = next(elements, None)
        if element is None:
            stack.pop()
            continue

        name = element.keyword or "unknown element"
        if element.VR == "SQ":
            items = list(enumerate(element.value or [], start=1))
            # Reversed, so that item 1 is on top of the stack and walked first.
            stack.extend(
                (iter(item), f"{name} item {number} / ") for number, item in reversed(items)
            )
        else:
            yield f"{parent}{name} {_tag_text(element.tag)}", element


def _values(element: DataElement) -> list[str]:
    value = element.value
    if isinstance(value, (MultiValue, list)):
        return [str(item) for item in value]
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    return [str(value)] if str(value) != "" else []


def _value_problem(vr: str, value: str) -> str:
    """Return why ``value`` breaks VR ``vr`` (after the element's name), or ""."""
    maximum = MAX_VALUE_LEN.get(vr) or EXTRA_MAX_LENGTHS.get(vr)
    if vr in ("DS", "IS", "CS", "AE", "DA", "TM", "DT", "AS"):
        checked = value.strip(" ")
    elif vr == "UI":
        checked = value.rstrip("\0")
    else:
        checked = value
    if maximum and len(checked) > maximum:
        return f"is {len(checked)} characters long; {vr} allows at most {maximum}."

    if vr == "PN":
        for group in checked.split("="):
            if len(group) > PN_GROUP_MAX:
                return (
                    f"has a name of {len(group)} characters; PN allows at most "
                    f"{PN_GROUP_MAX} per component group."
                )
        return ""
    if vr == "DA":
        return "" if _is_date(checked) else (
            f"is {value!r}, which is not a valid date; DA needs YYYYMMDD with a "
            "real month and day, for example 20250131."
        )
    if vr == "TM":
        return "" if _is_time(checked) else (
            f"is {value!r}, which is not a valid time; TM needs HHMMSS with hours "
            "00-23, minutes 00-59 and seconds 00-60, optionally .FFFFFF."
        )
    if vr == "DT":
        return "" if _is_date_time(checked) else (
            f"is {value!r}, which is not a valid date and time; DT needs "
            "YYYYMMDDHHMMSS.FFFFFF&ZZXX with real calendar values, trailing parts optional."
        )
    if vr in VR_RULES:
        try:
            validate_value(vr, checked, config.RAISE)
        except ValueError:
            return f"is {value!r}, which is not valid for {vr}; {vr} allows {VR_RULES[vr]}."
    return ""


def _is_date(value: str) -> bool:
    if not re.fullmatch(r"\d{8}", value):
        return False
    try:
        datetime.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return False
    return True


def _is_time(value: str) -> bool:
    match = _TIME.match(value)
    if match is None:
        return False
    hours, minutes, seconds, _fraction = match.groups()
    return (
        int(hours) <= 23
        and (minutes is None or int(minutes) <= 59)
        and (seconds is None or int(seconds) <= 60)
    )


def _is_date_time(value: str) -> bool:
    match = _DATE_TIME.match(value)
    if match is None:
        return False
    year, month, day, hours, minutes, seconds, _fraction, _offset = match.groups()
    if day is not None and not _is_date(f"{year}{month}{day}"):
        return False
    if month is not None and not 1 <= int(month) <= 12:
        return False
    clock = "".join(part for part in (hours, minutes, seconds) if part is not None)
    return not clock or _is_time(clock)
