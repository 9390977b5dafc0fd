"""Configuration read from environment variables.

Every key is an UPPERCASE Flask configuration key named after the environment
variable that sets it, so ``DCMTK_TIMEOUT=10`` becomes ``app.config["DCMTK_TIMEOUT"]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The DICOM standard edition that app.standard builds into the package.
BUNDLED_STANDARD_DIR = Path(__file__).resolve().parent / "standard_data"

DEFAULTS: dict[str, Any] = {
    "PORT": 3000,
    "DICOM_STORAGE_DIR": "data/instances",
    "WORKLIST_DIR": "data/worklists",
    "ORTHANC_HOST": "127.0.0.1",
    "ORTHANC_DICOM_PORT": 4242,
    "ORTHANC_AET": "ORTHANC",
    "DICOM_AET": "DICOMSERVICE",
    "ORTHANC_URL": "",
    "DICOM_UID_ROOT": "",
    "DCMTK_TIMEOUT": 30,
    "API_TOKEN": "",
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    # The edition bundled in app/standard_data; an empty value turns the IOD check off.
    "DICOM_STANDARD_DIR": str(BUNDLED_STANDARD_DIR),
    # Repair imported files unless the request sets repair=false.
    "IMPORT_REPAIR": False,
}

INTEGER_KEYS = ("PORT", "ORTHANC_DICOM_PORT", "DCMTK_TIMEOUT", "MAX_CONTENT_LENGTH")
BOOLEAN_KEYS = ("IMPORT_REPAIR",)


class ConfigError(ValueError):
    """A configuration value that the service cannot start with."""


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read the service configuration from ``environ`` (default ``os.environ``).

    Raises
    ------
    ConfigError
        If an integer setting is not a positive whole number, or a boolean
        setting is not one of true, false, yes, no, on, off, 1 or 0.
    """
    environ = os.environ if environ is None else environ
    config = dict(DEFAULTS)

    for key in DEFAULTS:
        if key in environ:
            config[key] = environ[key].strip()

    for key in INTEGER_KEYS:
        config[key] = _positive_integer(key, config[key])

    for key in BOOLEAN_KEYS:
        config[key] = _boolean(key, config[key])

    config["ORTHANC_URL"] = str(config["ORTHANC_URL"]).rstrip("/")
    config["DICOM_UID_ROOT"] = str(config["DICOM_UID_ROOT"]).rstrip(".")
    return config


def _positive_integer(key: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key} must be a whole number, got {value!r}."
        ) from None

    if number <= 0:
        raise ConfigError(f"{key} must be greater than 0, got {number}.")
    return number


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}.")
