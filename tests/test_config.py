"""Tests of the configuration read from the environment."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_config


def test_defaults() -> None:
    config = load_config({})

    assert config["PORT"] == 3000
    assert config["ORTHANC_DICOM_PORT"] == 4242
    assert config["ORTHANC_AET"] == "ORTHANC"
    assert config["DCMTK_TIMEOUT"] == 30


def test_environment_overrides() -> None:
    config = load_config(
        {"PORT": "8080", "ORTHANC_URL": "http://127.0.0.1:8042/", "DICOM_UID_ROOT": "1.2.3."}
    )

    assert config["PORT"] == 8080
    assert config["ORTHANC_URL"] == "http://127.0.0.1:8042"
    assert config["DICOM_UID_ROOT"] == "1.2.3"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("PORT", "abc", "whole number"), ("DCMTK_TIMEOUT", "0", "greater than 0"),
     ("MAX_CONTENT_LENGTH", "-1", "greater than 0")],
)  # fmt: skip
def test_invalid_integer_names_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}.*{message}"):
        load_config({key: value})
