"""Marshmallow fields that check values against their DICOM value representation.

Each field is bound to the keyword of the element it fills, and takes the
element's value representation (VR) from pydicom's data dictionary. The rules are those of PS3.5 section 6.2: maximum lengths
counted in characters, the character repertoire of each VR, the structure of
person names, and real dates and times.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields
from pydicom.datadict import dictionary_VR
from pydicom.valuerep import MAX_VALUE_LEN

from .uids import uid_problems

# Text VRs whose values may contain characters outside the default
# repertoire when Specific Character Set (0008,0005) names another one.
EXTENDED_TEXT_VRS = {"LO", "SH", "PN", "LT", "ST", "UT", "UC"}

# Maximum length of each person name component group (PS3.5 table 6.2-1).
PN_GROUP_LENGTH = 64
PN_MAX_GROUPS = 3
PN_MAX_COMPONENTS = 5

# C0 and C1 control characters. PS3.5 section 6.1.3 allows none of them in
# LO, SH, PN and CS except ESC for code extensions, which this service does
# not write, and every value is one line of a dump file. The Unicode line
# and paragraph separators (U+2028, U+2029) break lines too.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CS_VALUE = re.compile(r"^[A-Z0-9 _]*$")
_DATE_FORMATS = ("%Y%m%d", "%Y-%m-%d")
_TIME_FORMATS = (
    re.compile(r"^(\d{2})(\d{2})(\d{2})?$"),
    re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$"),
)

NULL_MESSAGE = "Must not be null. Leave the field out to use its default."


class DicomText(fields.String):
    """A single-valued string element, checked against the element's VR."""

    def __init__(self, keyword: str, vr: str | None = None, **kwargs: Any) -> None:
        self.keyword = keyword
        self.vr = vr or str(dictionary_VR(keyword))
        super().__init__(**_element_options(kwargs, keyword, f"{keyword} ({self.vr})"))

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        # Leading and trailing spaces are padding for these VRs (PS3.5
        # table 6.2-1), so the stored value is the trimmed one.
        text = text.strip(" ")
        if self.vr == "PN":
            # Trailing empty component groups may be left out (PS3.5
            # section 6.2.1), and readers such as pydicom drop them.
            text = text.rstrip("=")
        problems = text_problems(text, self.vr)
        if problems:
            raise ValidationError(problems)
        return text


class DicomDate(fields.String):
    """A DA value, accepted as ``YYYYMMDD`` or ``YYYY-MM-DD`` and returned as ``YYYYMMDD``."""

    def __init__(self, keyword: str, **kwargs: Any) -> None:
        self.keyword = keyword
        description = f"{keyword} (DA), YYYYMMDD or YYYY-MM-DD"
        super().__init__(**_element_options(kwargs, keyword, description))

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        return parse_date(text).strftime("%Y%m%d")


class DicomTime(fields.String):
    """A TM value, accepted as ``HHMMSS``, ``HHMM``, ``HH:MM`` or ``HH:MM:SS``."""

    def __init__(self, keyword: str, **kwargs: Any) -> None:
        self.keyword = keyword
        description = f"{keyword} (TM), HHMMSS, HHMM, HH:MM or HH:MM:SS"
        super().__init__(**_element_options(kwargs, keyword, description))

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        return parse_time(text)


class DicomInteger(fields.Integer):
    """An IS value: a whole number that fits 12 characters and 32 bits."""

    def __init__(self, keyword: str, minimum: int = 0, **kwargs: Any) -> None:
        self.keyword = keyword
        self.minimum = minimum
        kwargs.setdefault("strict", False)
        kwargs.setdefault(
            "error_messages",
            {"null": NULL_MESSAGE, "invalid": "Must be a whole number (IS)."},
        )
        super().__init__(**_element_options(kwargs, keyword, f"{keyword} (IS)"))

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValidationError("Must be a whole number (IS).")
        number = super()._deserialize(value, attr, data, **kwargs)
        if number is None:
            raise ValidationError("Must be a whole number (IS).")
        if not self.minimum <= number <= 2**31 - 1:
            raise ValidationError(
                f"Must be between {self.minimum} and {2**31 - 1} (IS)."
            )
        return int(number)


class DicomUID(fields.String):
    """A UI value, checked by the UID rules of PS3.5 section 9.1."""

    def __init__(self, keyword: str, **kwargs: Any) -> None:
        self.keyword = keyword
        super().__init__(**_element_options(kwargs, keyword, f"{keyword} (UI)"))

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        problems = uid_problems(text)
        if problems:
            raise ValidationError([f"Invalid UID (UI): {problem}" for problem in problems])
        return text


def _element_options(
    kwargs: dict[str, Any], keyword: str, description: str
) -> dict[str, Any]:
    """Add the null message and the OpenAPI description of a field to ``kwargs``."""
    kwargs.setdefault("error_messages", {"null": NULL_MESSAGE})
    kwargs.setdefault("metadata", {"description": description, "x-dicom-keyword": keyword})
    return kwargs


def text_problems(text: str, vr: str) -> list[str]:
    """List each rule of ``vr`` that the single value ``text`` breaks."""
    problems: list[str] = []

    if _CONTROL.search(text):
        problems.append(f"Must not contain control characters such as line breaks ({vr}).")
    if _SURROGATE.search(text):
        # JSON escapes such as "\ud800" decode to lone surrogates, which no
        # character set can encode, so the dump file could not be written.
        problems.append(
            "Must not contain unpaired surrogate code points (U+D800 to U+DFFF) "
            f"({vr})."
        )
    if "\\" in text:
        problems.append(
            f"Must not contain a backslash, which separates values in DICOM ({vr})."
        )
    if vr not in EXTENDED_TEXT_VRS and not text.isascii():
        problems.append(f"Only ASCII characters are allowed ({vr}).")

    if vr == "PN":
        problems.extend(person_name_problems(text))
    elif vr == "CS" and not _CS_VALUE.match(text):
        problems.append("Only A-Z, 0-9, space and underscore are allowed (CS).")
    elif vr == "AE" and text and not text.strip():
        problems.append("Must not be only spaces (AE).")

    maximum = MAX_VALUE_LEN.get(vr)
    if maximum is not None and len(text) > maximum:
        problems.append(f"Longer than {maximum} characters ({vr}).")
    return problems


def person_name_problems(text: str) -> list[str]:
    """List the rules of PS3.5 section 6.2.1 that a person name breaks."""
    problems: list[str] = []
    groups = text.split("=")

    if len(groups) > PN_MAX_GROUPS:
        problems.append(
            "At most 3 component groups (alphabetic=ideographic=phonetic) are "
            "allowed, so '=' may appear at most twice (PN)."
        )
        return problems

    for group in groups:
        if group.count("^") > PN_MAX_COMPONENTS - 1:
            problems.append(
                "At most 5 components FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX are "
                "allowed, so '^' may appear at most 4 times per group (PN)."
            )
            break

    for group in groups:
        if len(group) > PN_GROUP_LENGTH:
            problems.append(
                f"Longer than {PN_GROUP_LENGTH} characters in one component group (PN)."
            )
            break
    return problems


def parse_date(text: str) -> datetime.date:
    """Parse ``YYYYMMDD`` or ``YYYY-MM-DD`` into a real calendar date."""
    for date_format in _DATE_FORMATS:
        length = 8 if date_format == "%Y%m%d" else 10
        if len(text) != length:
            continue
        try:
            return datetime.datetime.strptime(text, date_format).date()
        except ValueError:
            continue
    raise ValidationError(
        f"Not a real date in the form YYYYMMDD or YYYY-MM-DD (DA): {text!r}."
    )


def parse_time(text: str) -> str:
    """Parse ``HHMMSS``, ``HHMM``, ``HH:MM`` or ``HH:MM:SS`` into a TM value ``HHMMSS``."""
    for pattern in _TIME_FORMATS:
        match = pattern.match(text)
        if match is None:
            continue
        hour, minute, second = (int(part or 0) for part in match.groups())
        if hour < 24 and minute < 60 and second < 60:
            return f"{hour:02d}{minute:02d}{second:02d}"
    raise ValidationError(
        f"Not a valid time in the form HHMMSS, HHMM, HH:MM or HH:MM:SS (TM): {text!r}."
    )
