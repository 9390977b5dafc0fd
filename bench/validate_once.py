"""Validate one file with dicom-validator in a new process, the benchmark's anchor.

Usage: ``python bench/validate_once.py STANDARD_DIR FILE``. The process
loads the standard's JSON files, as a command-line run would, then checks
the file and exits with status 0 whether or not the file passed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from dicom_validator.validator.dicom_file_validator import DicomFileValidator
from dicom_validator.validator.dicom_info import DicomInfo
from dicom_validator.validator.error_handler import NullValidationResultHandler

STANDARD_FILES = ("dict_info.json", "iod_info.json", "module_info.json")


def main(standard_dir: str, path: str) -> int:
    loaded = []
    for name in STANDARD_FILES:
        with open(Path(standard_dir) / name, encoding="utf-8") as handle:
            loaded.append(json.load(handle))
    validator = DicomFileValidator(
        DicomInfo(*loaded),
        logging.WARNING,
        suppress_vr_warnings=True,
        error_handler=NullValidationResultHandler(),
    )
    validator.validate(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
