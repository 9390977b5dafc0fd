"""Checks of element values against their value representation (PS3.5 section 6.2).

They work on any file, including files that the service did not write, and
word each finding for an operator.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID
from pydicom.valuerep import MAX_VALUE_LEN, validate_value

from .inspection import actual_encoding_if_wrong

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
                        str(Tag(element.tag)),
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
            yield f"{parent}{name} {Tag(element.tag)}", element


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
