"""Tests of app.standard: the offline build, the bundled edition and the refresh command."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from dicom_validator.spec_reader.condition_parser import ConditionParser
from dicom_validator.spec_reader.edition_reader import EditionReader

from app import standard
from app.config import BUNDLED_STANDARD_DIR, load_config
from app.iod import STANDARD_FILES, read_edition
from app.local_orthanc import free_port

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


def load(name: str) -> Any:
    with open(BUNDLED_STANDARD_DIR / name, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> standard.BuildSummary:
    """One offline build from the installed dicom-standard package."""
    return standard.build(output=tmp_path_factory.mktemp("built"))


def test_build_matches_bundled_data(built: standard.BuildSummary) -> None:
    for name in (*STANDARD_FILES, standard.EDITION_FILE):
        produced = (built.output / name).read_bytes()
        bundled = (BUNDLED_STANDARD_DIR / name).read_bytes()
        assert produced == bundled, f"{name} differs; run 'python -m app.standard build'"


def test_build_summary_counts(built: standard.BuildSummary) -> None:
    assert built.sop_classes >= 130
    assert built.modules >= 400
    assert built.conditions > 10_000
    assert f"{built.sop_classes} SOP Classes" in built.describe()


def test_default_dir_is_bundled() -> None:
    config = load_config({})

    assert config["DICOM_STANDARD_DIR"] == str(BUNDLED_STANDARD_DIR)
    assert read_edition(BUNDLED_STANDARD_DIR) == standard.BUNDLED_EDITION


def test_environment_overrides_dir(tmp_path: Path) -> None:
    config = load_config({"DICOM_STANDARD_DIR": str(tmp_path)})

    assert config["DICOM_STANDARD_DIR"] == str(tmp_path)


def test_bundled_data_small() -> None:
    size = sum((BUNDLED_STANDARD_DIR / name).stat().st_size for name in STANDARD_FILES)

    assert size < 15_000_000


@pytest.mark.parametrize(
    ("uid", "title", "module"),
    [
        (CR_STORAGE, "CR Image IOD", "CR Image"),
        (SC_STORAGE, "Secondary Capture Image IOD", "SC Equipment"),
    ],
)
def test_iod_lists_modules_with_usage(uid: str, title: str, module: str) -> None:
    iod = load("iod_info.json")[uid]

    assert iod["title"] == title
    assert iod["modules"]["Patient"] == {"ref": "patient", "use": "M"}
    assert iod["modules"][module]["use"] == "M"
    assert iod["modules"]["Clinical Trial Subject"]["use"] == "U"
    assert iod["group_macros"] == {}


def test_conditional_module_keeps_statement() -> None:
    contrast = load("iod_info.json")[CR_STORAGE]["modules"]["Contrast/Bolus"]

    assert contrast["use"] == "C - Required if contrast media was used in this image"
    # The statement names no attribute, so it cannot be checked.
    assert contrast["cond"] == {"type": "U"}


def test_enhanced_ct_group_macros() -> None:
    iod = load("iod_info.json")[ENHANCED_CT_STORAGE]
    modules = load("module_info.json")

    assert iod["group_macros"]["Frame Content"] == {"ref": "macro:frame-content", "use": "M"}
    assert "(0020,9111)" in modules["macro:frame-content"]
    mapping = iod["group_macros"]["Real World Value Mapping"]
    assert mapping["cond"] == {
        "index": 0, "op": "=", "tag": "(0018,9361)", "type": "MU", "values": ["YES"]
    }  # fmt: skip
    shared = modules["multi-frame-functional-groups"]["(5200,9229)"]
    assert shared["items"]["include"] == [{"ref": "FuncGroup"}]


def test_module_types_and_nesting() -> None:
    modules = load("module_info.json")

    assert modules["image-pixel"]["(0028,0010)"] == {"name": "Rows", "type": "1"}
    assert modules["patient"]["(0010,0010)"]["type"] == "2"
    icon = modules["general-image"]["(0088,0200)"]
    assert icon["type"] == "3"
    assert icon["items"]["(0028,0010)"]["type"] == "1"


def test_conditions_from_condition_parser() -> None:
    dictionary = load("dict_info.json")
    planar = load("module_info.json")["image-pixel"]["(0028,0006)"]

    expected = ConditionParser(dictionary).parse(
        "Required if Samples per Pixel (0028,0002) has a value greater than 1."
    )

    assert planar["type"] == "1C"
    assert planar["cond"] == json.loads(json.dumps(expected.result_dict()))


def test_enumerated_values_parsed() -> None:
    modules = load("module_info.json")

    assert modules["patient"]["(0010,0040)"]["enums"] == [{"val": ["M", "F", "O"]}]
    # Values listed for other attributes in a linked section are not taken over.
    assert "enums" not in modules["sc-equipment"]["(0008,0060)"]
    assert "enums" not in modules["general-image"]["(0008,0008)"]


def test_dictionary_entries() -> None:
    dictionary = load("dict_info.json")

    assert dictionary["(0008,0050)"] == {
        "name": "Accession Number", "vr": "SH", "vm": "1", "prop": ""
    }  # fmt: skip
    assert dictionary["(0008,0001)"]["prop"] == "RET"
    assert "(60xx,0010)" in dictionary


def test_build_rejects_missing_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    output = tmp_path / "out"

    with caplog.at_level(logging.ERROR):
        status = standard.main(["build", "--source", str(tmp_path), "--output", str(output)])

    assert status == 1
    assert "attributes.json" in caplog.text
    assert "not found in" in caplog.text
    assert not output.exists()


def test_source_dir_found() -> None:
    source = standard.source_dir()

    assert (source / "module_to_attributes.json").is_file()


@pytest.fixture
def unreachable_nema(monkeypatch: pytest.MonkeyPatch) -> str:
    """Point EditionReader at a loopback port where nothing listens."""
    url = f"http://127.0.0.1:{free_port()}/"
    monkeypatch.setattr(EditionReader, "base_url", url)
    return url


def test_refresh_without_edition_list(
    tmp_path: Path, unreachable_nema: str, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp_path / "edition"

    with caplog.at_level(logging.ERROR):
        status = standard.main(
            ["refresh", "--edition", "2025b", "--output", str(output), "--cache", str(tmp_path / "cache")]
        )

    assert status == 1
    assert f"DICOM edition '2025b' was not found in the list of editions at {unreachable_nema}" in caplog.text
    assert not output.exists()


def test_refresh_download_failure(
    tmp_path: Path, unreachable_nema: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "editions.json").write_text(json.dumps(["2025a", "2025b", "2025c"]))
    output = tmp_path / "edition"
    output.mkdir()
    (output / "dict_info.json").write_text("{}")

    with caplog.at_level(logging.ERROR):
        status = standard.main(
            ["refresh", "--edition", "2025b", "--output", str(output), "--cache", str(cache)]
        )

    assert status == 1
    assert "Downloading or parsing DICOM edition 2025b failed" in caplog.text
    # The folder in use is left as it was.
    assert (output / "dict_info.json").read_text() == "{}"
    assert sorted(path.name for path in output.iterdir()) == ["dict_info.json"]
