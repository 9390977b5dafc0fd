"""IOD validation with the ``dicom-validator`` package.

``dicom-validator`` checks a dataset against the modules and attribute types
that PS3.3 defines for its SOP Class. It reads the standard from three JSON
files (``dict_info.json``, ``iod_info.json``, ``module_info.json``) in one
folder. The folder is loaded once per process; when it is missing the
report says that IOD validation did not run, and never passes silently.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import keyword_for_tag

logger = logging.getLogger(__name__)

STANDARD_FILES = ("dict_info.json", "iod_info.json", "module_info.json")

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
        self._lock = threading.Lock()
        self._info: Any = None
        self._edition = ""
        self._reason = ""
        self._loaded = False

    def load(self) -> None:
        """Load the standard's JSON files unless already loaded."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            self._info, self._edition, self._reason = _load_standard(self.standard_dir)

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

        validator = DicomFileValidator(
            self._info, logging.WARNING, error_handler=NullValidationResultHandler()
        )
        result = validator.validate(path)[str(path)]

        if result.status not in (Status.Passed, Status.Failed):
            return IodReport(
                ran=False,
                edition=self._edition,
                reason=_status_reason(result.status.name, result.sop_class_uid),
            )

        findings = [
            _finding(module, tag, error)
            for module, tag_errors in result.module_errors.items()
            for tag, error in tag_errors.items()
        ]
        return IodReport(ran=True, edition=self._edition, findings=findings)


def _load_standard(directory: Path | None) -> tuple[Any, str, str]:
    if directory is None:
        return None, "", "IOD validation did not run: no DICOM standard data is configured."

    missing = [name for name in STANDARD_FILES if not (directory / name).is_file()]
    if missing:
        return (
            None,
            "",
            f"IOD validation did not run: {', '.join(missing)} not found in "
            f"{str(directory)!r}.",
        )

    from dicom_validator.validator.dicom_info import DicomInfo

    loaded = []
    for name in STANDARD_FILES:
        with open(directory / name, encoding="utf-8") as handle:
            loaded.append(json.load(handle))

    version_file = directory / "version"
    edition = version_file.read_text().strip() if version_file.is_file() else "unknown"
    logger.info("Loaded DICOM standard %s from %s", edition, directory)
    return DicomInfo(loaded[0], loaded[1], loaded[2]), edition, ""


def _finding(module: str, tag: Any, error: Any) -> IodFinding:
    from dicom_validator.validator.error_handler import ValidationResultFormatter

    number = int(tag.tag)
    tag_text = f"({number >> 16:04X},{number & 0xFFFF:04X})"
    keyword = keyword_for_tag(number) or "unknown"
    if tag.parents:
        parents = " / ".join(keyword_for_tag(int(parent)) or str(parent) for parent in tag.parents)
        keyword = f"{parents} / {keyword}"

    code = error.code.name
    severity = "warning" if code in WARNING_CODES else "error"
    detail = ValidationResultFormatter().error_message(error).strip()
    message = f"{keyword} {tag_text} (type {error.type.value}) {detail}".replace("\n", " ")
    return IodFinding(tag_text, keyword, module, severity, " ".join(message.split()))


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
