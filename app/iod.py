"""IOD validation with the ``dicom-validator`` package.

``dicom-validator`` checks a dataset against the modules and attribute types
that PS3.3 defines for its SOP Class. It reads the standard from three JSON
files (``dict_info.json``, ``iod_info.json``, ``module_info.json``) in one
folder, which ``app.standard`` builds. Each folder is loaded once per process
and shared by every application in it. When the files are missing, the
report states that IOD validation did not run, and never passes silently.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.tag import Tag

logger = logging.getLogger(__name__)

STANDARD_FILES = ("dict_info.json", "iod_info.json", "module_info.json")
# Written by app.standard next to the three files: the edition and its source.
EDITION_FILE = "edition.json"

# The standards loaded in this process, keyed by resolved folder, with the
# number of times a folder was read from disk (tests check that it is once).
_loaded_standards: dict[Path, tuple[Any, str, str]] = {}
_standards_lock = threading.Lock()
_load_count = 0

# dicom-validator error codes that are warnings rather than errors: an
# attribute that no module of the IOD defines is allowed by PS3.3 section
# C.12.1.1.3 (Standard Extended SOP Classes) as long as it is type 3.
WARNING_CODES = {"TagUnexpected"}


@dataclass
class IodFinding:
    """One problem that the IOD check found."""

    tag: str
    keyword: str
    module: str
    severity: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {
            "tag": self.tag,
            "keyword": self.keyword,
            "module": self.module,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass
class IodReport:
    """The outcome of the IOD check of one file."""

    ran: bool
    reason: str = ""
    edition: str = ""
    findings: list[IodFinding] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for finding in self.findings if finding.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for finding in self.findings if finding.severity == "warning")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "reason": self.reason,
            "edition": self.edition,
            "errors": self.errors,
            "warnings": self.warnings,
            "findings": [finding.as_dict() for finding in self.findings],
        }


class IodValidator:
    """Checks files against their IOD, with the standard loaded once."""

    def __init__(self, standard_dir: Path | None) -> None:
        self.standard_dir = standard_dir
        self._info: Any = None
        self._edition = ""
        self._reason = ""
        self._loaded = False

    def load(self) -> None:
        """Load the standard's JSON files unless this process already has them."""
        if self._loaded:
            return
        self._info, self._edition, self._reason = shared_standard(self.standard_dir)
        self._loaded = True

    @property
    def available(self) -> bool:
        self.load()
        return self._info is not None

    @property
    def edition(self) -> str:
        self.load()
        return self._edition

    @property
    def reason(self) -> str:
        self.load()
        return self._reason

    def validate(self, path: Path) -> IodReport:
        """Check the file at ``path`` and list each finding with tag and module."""
        self.load()
        if self._info is None:
            return IodReport(ran=False, reason=self._reason)

        from dicom_validator.validator.dicom_file_validator import DicomFileValidator
        from dicom_validator.validator.error_handler import NullValidationResultHandler
        from dicom_validator.validator.validation_result import Status

        # Values are checked against their VR in app.validation, with
        # messages that name the limit, so dicom-validator skips that check.
        validator = DicomFileValidator(
            self._info,
            logging.WARNING,
            suppress_vr_warnings=True,
            error_handler=NullValidationResultHandler(),
        )
        try:
            with warnings.catch_warnings():
                # pydicom warns about encoding defects that app.validation
                # reports itself, such as a dataset in implicit VR behind
                # a TransferSyntaxUID that names explicit VR.
                warnings.simplefilter("ignore")
                result = validator.validate(path)[str(path)]
        except (OSError, EOFError, ValueError, struct.error) as error:
            # pydicom raises these for truncated or corrupt data, which
            # dicom-validator does not catch.
            logger.warning("IOD validation of %s failed: %s", path, error)
            return IodReport(
                ran=False,
                edition=self._edition,
                reason=f"IOD validation did not run: pydicom could not read the file ({error}).",
            )
        except RecursionError:
            # pydicom and dicom-validator descend into each sequence level
            # with recursive calls, so deeply nested sequences exhaust
            # Python's recursion limit.
            logger.warning("IOD validation of %s failed: sequences nested too deeply", path)
            return IodReport(
                ran=False,
                edition=self._edition,
                reason=(
                    "IOD validation did not run: the file's sequences are nested "
                    "more deeply than pydicom and dicom-validator can read."
                ),
            )

        if result.status not in (Status.Passed, Status.Failed):
            return IodReport(
                ran=False,
                edition=self._edition,
                reason=_status_reason(result.status.name, result.sop_class_uid),
            )

        findings = [
            _finding(module, tag, error, self._info.dictionary)
            for module, tag_errors in result.module_errors.items()
            for tag, error in sorted(tag_errors.items(), key=lambda item: item[0])
        ]
        findings.extend(self._pixel_data_findings(path, str(result.sop_class_uid)))
        return IodReport(ran=True, edition=self._edition, findings=findings)

    def _pixel_data_findings(self, path: Path, sop_class_uid: str) -> list[IodFinding]:
        """Check the top-level elements from (7FE0,0010) on, which dicom-validator skips.

        dicom-validator 0.9 does not read Pixel Data and later elements, so
        a required Pixel Data would never be reported missing. Mandatory
        modules are checked here for type 1 and 2 elements, and for 1C and 2C
        elements whose condition is the presence or absence of one element.
        """
        from pydicom import dcmread

        modules = self._info.iods[sop_class_uid]["modules"]
        required: list[tuple[str, str, dict[str, Any]]] = []
        for module_name, module in modules.items():
            if not str(module["use"]).startswith("M"):
                continue
            for tag_text, attribute in self._info.modules.get(module["ref"], {}).items():
                if tag_text.startswith("(7F") and tag_text >= "(7FE0,0010)":
                    required.append((module_name, tag_text, attribute))
        if not required:
            return []

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = dcmread(path, defer_size=1024, force=True)
        findings = []
        for module_name, tag_text, attribute in required:
            number = int(tag_text[1:5] + tag_text[6:10], 16)
            if number in dataset:
                continue
            condition = _presence_condition_met(attribute, dataset)
            if condition is None:
                continue
            because = f" because {condition}" if condition else ""
            keyword = _keyword(number, self._info.dictionary)
            findings.append(
                IodFinding(
                    tag_text,
                    keyword,
                    module_name,
                    "error",
                    f"{keyword} {tag_text} is missing; the {module_name} module requires "
                    f"it (type {attribute['type']}){because}.",
                )
            )
        return findings


def _presence_condition_met(attribute: dict[str, Any], dataset: Any) -> str | None:
    """Return "" for an unconditional element, the condition's wording when it
    is met, and None when it is not met or too complex to check here."""
    if attribute["type"] in ("1", "2"):
        return ""
    condition = attribute.get("cond") or {}
    if condition.get("op") not in ("+", "-") or "tag" not in condition:
        return None

    tag_text = condition["tag"]
    number = int(tag_text[1:5] + tag_text[6:10], 16)
    present = number in dataset
    if present != (condition["op"] == "+"):
        return None
    keyword = keyword_for_tag(number) or tag_text
    return f"{keyword} {tag_text} is {'present' if present else 'absent'}"


def shared_standard(directory: Path | None) -> tuple[Any, str, str]:
    """Return ``(DicomInfo or None, edition, reason)`` for ``directory``.

    The files are read once per process; later calls with the same folder
    return the same objects.
    """
    if directory is None:
        return None, "", "IOD validation did not run: no DICOM standard data is configured."

    key = directory.resolve()
    with _standards_lock:
        if key not in _loaded_standards:
            _loaded_standards[key] = _load_standard(key)
        return _loaded_standards[key]


def load_count() -> int:
    """Return how often this process has read a standard folder from disk."""
    return _load_count


def _load_standard(directory: Path) -> tuple[Any, str, str]:
    global _load_count

    missing = [name for name in STANDARD_FILES if not (directory / name).is_file()]
    if missing:
        logger.warning(
            "IOD validation is off: %s not found in %s. Run 'python -m app.standard "
            "build' or set DICOM_STANDARD_DIR.", ", ".join(missing), directory,
        )  # fmt: skip
        return (
            None,
            "",
            f"IOD validation did not run: {', '.join(missing)} not found in "
            f"{str(directory)!r}.",
        )

    from dicom_validator.validator.dicom_info import DicomInfo

    started = time.monotonic()
    loaded = []
    for name in STANDARD_FILES:
        with open(directory / name, encoding="utf-8") as handle:
            loaded.append(json.load(handle))
    _load_count += 1

    edition = read_edition(directory)
    logger.info(
        "Loaded DICOM standard %s from %s in %.1f s",
        edition, directory, time.monotonic() - started,
    )  # fmt: skip
    return DicomInfo(loaded[0], loaded[1], loaded[2]), edition, ""


def read_edition(directory: Path) -> str:
    """Return the edition named in ``directory``'s edition file, or ``"unknown"``."""
    path = directory / EDITION_FILE
    if not path.is_file():
        return "unknown"
    try:
        with open(path, encoding="utf-8") as handle:
            return str(json.load(handle).get("edition", "unknown"))
    except (OSError, ValueError, AttributeError) as error:
        logger.warning("Could not read %s: %s", path, error)
        return "unknown"


def _finding(module: str, tag: Any, error: Any, dictionary: dict[str, Any]) -> IodFinding:
    number = int(tag.tag)
    tag_text = str(Tag(number))
    keyword = _keyword(number, dictionary)
    if tag.parents:
        parents = " / ".join(_keyword(int(parent), dictionary) for parent in tag.parents)
        keyword = f"{parents} / {keyword}"

    code = error.code.name
    severity = "warning" if code in WARNING_CODES else "error"
    message = _message(f"{keyword} {tag_text}", module, error, dictionary)
    return IodFinding(tag_text, keyword, module, severity, message)


def _keyword(number: int, dictionary: dict[str, Any]) -> str:
    keyword = keyword_for_tag(number)
    if keyword:
        return keyword
    info = dictionary.get(str(Tag(number)))
    return str(info["name"]) if info else "unknown element"


def _message(label: str, module: str, error: Any, dictionary: dict[str, Any]) -> str:
    """Word one dicom-validator error for an operator: what is wrong and which rule."""
    attribute_type = getattr(error.type, "value", error.type)
    context = error.context or {}
    condition = _condition_text(context.get("cond"), dictionary)
    scope = _SCOPES.get(error.scope.name, "")

    match error.code.name:
        case "TagMissing":
            because = f" because {condition}" if condition else ""
            return (
                f"{label} is missing{scope}; the {module} module requires it "
                f"(type {attribute_type}){because}."
            )
        case "TagEmpty":
            return (
                f"{label} is present but empty; the {module} module requires a "
                f"value (type {attribute_type})."
            )
        case "TagUnexpected":
            return f"{label} is not defined by any module of this IOD{scope}."
        case "TagNotAllowed":
            when = f" when {condition}" if condition else ""
            return f"{label} is present{scope}, but the {module} module does not allow it{when}."
        case "EnumValueNotAllowed":
            allowed = ", ".join(str(value) for value in context.get("allowed", []))
            return (
                f"{label} has the value {context.get('value')!r}; the {module} module "
                f"allows only {allowed}."
            )
        case "InvalidValue":
            return (
                f"{label} has the value {context.get('value')!r}, which is not valid "
                f"for VR {context.get('VR')}."
            )
        case "InvalidSequence":
            return f"{label} is not encoded as a sequence (SQ), so its items were not checked."
    return f"{label}: {error.code.name} in the {module} module."


# Functional group sequence of an error, worded for messages.
_SCOPES = {
    "SharedFuncGroup": " in the Shared Functional Groups Sequence",
    "PerFrameFuncGroup": " in the Per-frame Functional Groups Sequence",
    "BothFuncGroups": " in both the Shared and the Per-frame Functional Groups Sequences",
}


def _condition_text(condition: Any, dictionary: dict[str, Any]) -> str:
    if not condition:
        return ""
    from dicom_validator.spec_reader.condition import Condition

    parsed = Condition.read_condition(condition)
    if parsed.type == "U":
        return ""
    return str(parsed.to_string(dictionary))


def _status_reason(status: str, sop_class_uid: str) -> str:
    reasons = {
        "MissingSOPClassUID": "IOD validation did not run: the file has no SOP Class UID (0008,0016).",
        "UnknownSOPClassUID": (
            f"IOD validation did not run: SOP Class UID {sop_class_uid!r} is not "
            "defined in the loaded edition of the standard."
        ),
        "InvalidFile": "IOD validation did not run: the file is not readable as DICOM.",
        "MissingFile": "IOD validation did not run: the file does not exist.",
    }
    return reasons.get(status, f"IOD validation did not run: {status}.")
