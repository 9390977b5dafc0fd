"""Tests of GET /api/dicom/instances/{filename}/validate on good and broken files.

The broken files are made here with pydicom from an instance the service
created, or from scratch, and copied into the app's storage folder, so the
route validates files that the service did not write itself.
"""

from __future__ import annotations

import io
import itertools
import shutil
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from app import create_app
from app.iod import load_count
from app.local_orthanc import LocalOrthanc

from .support import CONTRACT_EXAMPLE, app_config

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_numbers = itertools.count(9_000_000_001)


@contextmanager
def invalid_values_allowed() -> Iterator[None]:
    """Let pydicom set and write values that break their VR, as broken files need."""
    settings = pydicom_config.settings
    previous = settings.writing_validation_mode, settings.reading_validation_mode
    settings.writing_validation_mode = pydicom_config.IGNORE
    settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        settings.writing_validation_mode, settings.reading_validation_mode = previous


def create_instance(client: FlaskClient, **overrides: Any) -> Path:
    response = client.post("/api/dicom/instances", json={**CONTRACT_EXAMPLE, **overrides})
    assert response.status_code == 201, response.get_json()
    return Path(response.get_json()["data"]["filepath"])


def store(app: Flask, write: Callable[[Path], None]) -> str:
    """Write a file with ``write`` into the app's storage under a fresh instance name."""
    filename = f"instance_{next(_numbers)}.dcm"
    write(Path(app.config["DICOM_STORAGE_DIR"]) / filename)
    return filename


def store_changed(app: Flask, source: Path, change: Callable[[Dataset], None]) -> str:
    """Store a copy of ``source`` with ``change`` applied to its dataset."""

    def write(target: Path) -> None:
        with invalid_values_allowed():
            dataset = pydicom.dcmread(source)
            change(dataset)
            dataset.save_as(target, enforce_file_format=True)

    return store(app, write)


def validate(client: FlaskClient, filename: str) -> dict[str, Any]:
    response = client.get(f"/api/dicom/instances/{filename}/validate")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def set_value(keyword: str, value: Any) -> Callable[[Dataset], None]:
    def change(dataset: Dataset) -> None:
        setattr(dataset, keyword, value)

    return change


def remove(keyword: str) -> Callable[[Dataset], None]:
    def change(dataset: Dataset) -> None:
        delattr(dataset, keyword)

    return change


@pytest.fixture
def cr_file(client: FlaskClient) -> Path:
    return create_instance(client)


def test_contract_cr_is_valid(client: FlaskClient, cr_file: Path) -> None:
    data = validate(client, cr_file.name)

    assert data["iod"]["ran"] is True
    assert data["iod"]["errors"] == 0, data["iod"]["findings"]
    assert data["valueErrors"] == []
    assert data["problems"] == []
    assert data["isValid"] is True
    assert data["hasStudyInstanceUID"] is True
    assert data["hasSeriesInstanceUID"] is True
    assert data["hasSOPInstanceUID"] is True
    assert "(0020,000d)" in data["details"].lower()
    assert pydicom.dcmread(cr_file).SOPClassUID == CR_STORAGE


def test_sc_instance_is_valid(client: FlaskClient) -> None:
    path = create_instance(client, modality="OT")

    data = validate(client, path.name)

    assert pydicom.dcmread(path).SOPClassUID == SC_STORAGE
    assert data["iod"]["ran"] is True
    assert data["iod"]["errors"] == 0, data["iod"]["findings"]
    assert data["isValid"] is True


def test_report_names_edition(client: FlaskClient, cr_file: Path) -> None:
    data = validate(client, cr_file.name)

    assert "dicom-standard 0.1.0" in data["iod"]["edition"]


BROKEN_VALUES = [
    pytest.param(
        set_value("AccessionNumber", "A" * 20),
        "AccessionNumber (0008,0050) is 20 characters long; SH allows at most 16.",
        id="accession-number-too-long",
    ),
    pytest.param(
        set_value("StudyDate", "20251340"),
        "StudyDate (0008,0020) is '20251340', which is not a valid date; DA needs "
        "YYYYMMDD with a real month and day, for example 20250131.",
        id="date-with-month-13",
    ),
    pytest.param(
        set_value("PatientBirthDate", "2025-01-31"),
        "PatientBirthDate (0010,0030) is '2025-01-31', which is not a valid date",
        id="date-with-dashes",
    ),
    pytest.param(
        set_value("StudyTime", "256000"),
        "StudyTime (0008,0030) is '256000', which is not a valid time; TM needs HHMMSS",
        id="time-with-hour-25",
    ),
    pytest.param(
        set_value("PatientID", "P" * 70),
        "PatientID (0010,0020) is 70 characters long; LO allows at most 64.",
        id="patient-id-too-long",
    ),
    pytest.param(
        set_value("Modality", "cr"),
        "Modality (0008,0060) is 'cr', which is not valid for CS; CS allows uppercase "
        "letters, digits, space and underscore.",
        id="lowercase-code-string",
    ),
    pytest.param(
        set_value("SeriesInstanceUID", "1.2.03.4"),
        "SeriesInstanceUID (0020,000E) is '1.2.03.4', which is not valid for UI",
        id="uid-with-leading-zero",
    ),
    pytest.param(
        set_value("InstanceNumber", "1.5"),
        "InstanceNumber (0020,0013) is '1.5', which is not valid for IS; IS allows a whole number",
        id="instance-number-not-integer",
    ),
    pytest.param(
        set_value("ReferringPhysicianName", "A" * 70),
        "ReferringPhysicianName (0008,0090) has a name of 70 characters; PN allows at "
        "most 64 per component group.",
        id="person-name-too-long",
    ),
]


@pytest.mark.parametrize(("change", "message"), BROKEN_VALUES)
def test_invalid_value_is_reported(
    app: Flask, client: FlaskClient, cr_file: Path, change: Callable[[Dataset], None], message: str
) -> None:
    filename = store_changed(app, cr_file, change)

    data = validate(client, filename)

    assert data["isValid"] is False
    assert any(problem.startswith(message) for problem in data["problems"]), data["problems"]
    assert data["valueErrors"], data
    assert data["valueErrors"][0]["message"].startswith(message)


def test_all_defects_reported(
    app: Flask, client: FlaskClient, cr_file: Path
) -> None:
    def break_three(dataset: Dataset) -> None:
        dataset.AccessionNumber = "A" * 20
        dataset.StudyDate = "20251340"
        del dataset.Rows

    data = validate(client, store_changed(app, cr_file, break_three))

    assert data["isValid"] is False
    assert [error["keyword"] for error in data["valueErrors"]] == ["StudyDate", "AccessionNumber"]
    assert "Rows (0028,0010) is missing; the Image Pixel module requires it (type 1)." in data["problems"]
    assert len(data["problems"]) == 3, data["problems"]


MISSING_ATTRIBUTES = [
    pytest.param(
        remove("Rows"),
        "Rows (0028,0010) is missing; the Image Pixel module requires it (type 1).",
        id="rows",
    ),
    pytest.param(
        remove("PhotometricInterpretation"),
        "PhotometricInterpretation (0028,0004) is missing; the CR Image module requires "
        "it (type 1).",
        id="photometric-interpretation",
    ),
    pytest.param(
        set_value("SamplesPerPixel", None),
        "SamplesPerPixel (0028,0002) is present but empty; the Image Pixel module "
        "requires a value (type 1).",
        id="empty-samples-per-pixel",
    ),
    pytest.param(
        remove("StudyID"),
        "StudyID (0020,0010) is missing; the General Study module requires it (type 2).",
        id="type-2-study-id",
    ),
    pytest.param(
        set_value("SamplesPerPixel", 3),
        "PlanarConfiguration (0028,0006) is missing; the Image Pixel module requires it "
        "(type 1C) because Samples per Pixel is greater than 1.",
        id="type-1c-planar-configuration",
    ),
    pytest.param(
        set_value("PatientSex", "X"),
        "PatientSex (0010,0040) has the value 'X'; the Patient module allows only M, F, O.",
        id="enumerated-value",
    ),
]


@pytest.mark.parametrize(("change", "message"), MISSING_ATTRIBUTES)
def test_iod_defect_is_reported(
    app: Flask, client: FlaskClient, cr_file: Path, change: Callable[[Dataset], None], message: str
) -> None:
    filename = store_changed(app, cr_file, change)

    data = validate(client, filename)

    assert data["isValid"] is False
    assert data["iod"]["ran"] is True
    assert message in data["problems"], data["problems"]
    finding = next(item for item in data["iod"]["findings"] if item["message"] == message)
    assert finding["severity"] == "error"
    assert finding["tag"] == message.split(" ")[1]
    assert finding["module"] in message


UID_KEYWORDS = {
    "StudyInstanceUID": ("hasStudyInstanceUID", "(0020,000D)"),
    "SeriesInstanceUID": ("hasSeriesInstanceUID", "(0020,000E)"),
    "SOPInstanceUID": ("hasSOPInstanceUID", "(0008,0018)"),
}


@pytest.mark.parametrize("keyword", list(UID_KEYWORDS))
@pytest.mark.parametrize("defect", ["missing", "empty"])
def test_uid_flag_false_without_value(
    app: Flask, client: FlaskClient, cr_file: Path, keyword: str, defect: str
) -> None:
    change = remove(keyword) if defect == "missing" else set_value(keyword, "")
    filename = store_changed(app, cr_file, change)

    data = validate(client, filename)

    flag, tag = UID_KEYWORDS[keyword]
    state = "missing" if defect == "missing" else "present but empty"
    assert data[flag] is False
    for other, (other_flag, _tag) in UID_KEYWORDS.items():
        if other != keyword:
            assert data[other_flag] is True
    assert data["isValid"] is False
    assert data["missingTags"] == [keyword]
    assert data["problems"][0].startswith(f"{keyword} {tag} is {state}; every instance needs it")
    # The IOD check finds the same defect; it is listed under "iod" but worded once.
    assert sum(tag in problem for problem in data["problems"]) == 1, data["problems"]


def test_missing_sop_class_stops_iod(
    app: Flask, client: FlaskClient, cr_file: Path
) -> None:
    filename = store_changed(app, cr_file, remove("SOPClassUID"))

    data = validate(client, filename)

    assert data["isValid"] is False
    assert data["missingTags"] == ["SOPClassUID"]
    assert data["iod"]["ran"] is False
    assert data["iod"]["reason"] == (
        "IOD validation did not run: the file has no SOP Class UID (0008,0016)."
    )
    assert data["problems"][0].startswith("SOPClassUID (0008,0016) is missing;")


def test_unknown_sop_class_reported(
    app: Flask, client: FlaskClient, cr_file: Path
) -> None:
    filename = store_changed(app, cr_file, set_value("SOPClassUID", "1.2.3.4"))

    data = validate(client, filename)

    assert data["isValid"] is False
    assert data["iod"]["ran"] is False
    assert "SOP Class UID '1.2.3.4' is not defined in the loaded edition" in data["iod"]["reason"]


def test_not_dicom_is_reported(app: Flask, client: FlaskClient) -> None:
    filename = store(app, lambda path: path.write_text("PatientID,StudyDate\n123,20250101\n" * 10))

    data = validate(client, filename)

    assert data["isValid"] is False
    assert data["hasStudyInstanceUID"] is False
    assert data["hasSeriesInstanceUID"] is False
    assert data["hasSOPInstanceUID"] is False
    assert data["problems"] == [
        f"{filename} is not a DICOM file: it has no 'DICM' marker after the 128-byte "
        "preamble and no DICOM file meta information. Check that the right file was uploaded."
    ]
    assert data["iod"]["ran"] is False
    assert "not readable as DICOM" in data["iod"]["reason"]


def test_empty_file_is_not_dicom(app: Flask, client: FlaskClient) -> None:
    filename = store(app, lambda path: path.write_bytes(b""))

    data = validate(client, filename)

    assert data["isValid"] is False
    assert "is not a DICOM file" in data["problems"][0]


def test_truncated_header_reported(app: Flask, client: FlaskClient, cr_file: Path) -> None:
    content = cr_file.read_bytes()
    filename = store(app, lambda path: path.write_bytes(content[:400]))

    data = validate(client, filename)

    assert data["isValid"] is False
    assert data["problems"][0].startswith(
        f"{filename} is truncated or corrupt: the data ends before the data set is "
        "complete (DCMTK: "
    )
    assert data["problems"][0].endswith("Export or send the file again.")
    assert str(Path(app.config["DICOM_STORAGE_DIR"])) not in data["problems"][0]
    assert data["hasStudyInstanceUID"] is False


def test_truncated_pixel_data_reported(app: Flask, client: FlaskClient, cr_file: Path) -> None:
    content = cr_file.read_bytes()
    filename = store(app, lambda path: path.write_bytes(content[:-10]))

    data = validate(client, filename)

    assert data["isValid"] is False
    assert "is truncated or corrupt" in data["problems"][0]
    # Everything before the pixel data is intact and still read.
    assert data["hasStudyInstanceUID"] is True
    assert data["hasSeriesInstanceUID"] is True
    assert data["hasSOPInstanceUID"] is True


def test_foreign_file_lists_defects(app: Flask, client: FlaskClient) -> None:
    def write(path: Path) -> None:
        dataset = Dataset()
        dataset.SOPClassUID = SC_STORAGE
        dataset.SOPInstanceUID = generate_uid()
        dataset.StudyInstanceUID = generate_uid()
        dataset.SeriesInstanceUID = generate_uid()
        dataset.PatientID = "EXT-1"
        dataset.Modality = "OT"
        dataset.ConversionType = "WSD"
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.save_as(path, enforce_file_format=True)

    data = validate(client, store(app, write))

    assert data["isValid"] is False
    assert data["hasStudyInstanceUID"] is True
    assert data["missingTags"] == []
    problems = data["problems"]
    for expected in (
        "PatientName (0010,0010) is missing; the Patient module requires it (type 2).",
        "StudyDate (0008,0020) is missing; the General Study module requires it (type 2).",
        "Rows (0028,0010) is missing; the Image Pixel module requires it (type 1).",
        "PixelData (7FE0,0010) is missing; the Image Pixel module requires it (type 1C) "
        "because PixelDataProviderURL (0028,7FE0) is absent.",
    ):
        assert any(problem.startswith(expected) for problem in problems), (expected, problems)


def test_unexpected_attribute_warns(
    app: Flask, client: FlaskClient, cr_file: Path
) -> None:
    filename = store_changed(app, cr_file, set_value("EchoTime", "12"))

    data = validate(client, filename)

    warnings = [item for item in data["iod"]["findings"] if item["severity"] == "warning"]
    assert [item["keyword"] for item in warnings] == ["EchoTime"]
    assert warnings[0]["message"] == (
        "EchoTime (0018,0081) is not defined by any module of this IOD."
    )
    assert data["iod"]["errors"] == 0
    assert data["isValid"] is True


def test_sequence_item_value_checked(app: Flask, client: FlaskClient, cr_file: Path) -> None:
    def add_item(dataset: Dataset) -> None:
        item = Dataset()
        item.CodeValue = "T-D3000"
        item.CodingSchemeDesignator = "SRT"
        item.CodeMeaning = "Chest"
        item.CodingSchemeVersion = "V" * 20
        dataset.AnatomicRegionSequence = [item]

    data = validate(client, store_changed(app, cr_file, add_item))

    assert data["isValid"] is False
    assert (
        "AnatomicRegionSequence item 1 / CodingSchemeVersion (0008,0103) is 20 "
        "characters long; SH allows at most 16."
    ) in data["problems"]


def test_iod_off_with_empty_folder(
    tmp_path: Path, orthanc: LocalOrthanc, cr_file: Path
) -> None:
    empty = tmp_path / "no-standard"
    empty.mkdir()
    app = create_app(
        app_config(tmp_path / "other", orthanc, DICOM_STANDARD_DIR=str(empty))
    )
    storage = Path(app.config["DICOM_STORAGE_DIR"])
    shutil.copy(cr_file, storage / cr_file.name)

    data = validate(app.test_client(), cr_file.name)

    assert data["iod"]["ran"] is False
    assert data["iod"]["reason"] == (
        "IOD validation did not run: dict_info.json, iod_info.json, module_info.json "
        f"not found in {str(empty.resolve())!r}."
    )
    assert data["isValid"] is False
    assert data["problems"] == [data["iod"]["reason"]]


def test_iod_off_with_blank_setting(
    tmp_path: Path, orthanc: LocalOrthanc, cr_file: Path
) -> None:
    app = create_app(app_config(tmp_path / "blank", orthanc, DICOM_STANDARD_DIR=""))
    shutil.copy(cr_file, Path(app.config["DICOM_STORAGE_DIR"]) / cr_file.name)

    data = validate(app.test_client(), cr_file.name)

    assert data["iod"]["ran"] is False
    assert "no DICOM standard data is configured" in data["iod"]["reason"]


def test_standard_loaded_once(
    tmp_path: Path, orthanc: LocalOrthanc, cr_file: Path
) -> None:
    from app.config import BUNDLED_STANDARD_DIR

    copy = tmp_path / "standard-copy"
    shutil.copytree(BUNDLED_STANDARD_DIR, copy)
    before = load_count()

    for number in range(3):
        app = create_app(
            app_config(tmp_path / f"app-{number}", orthanc, DICOM_STANDARD_DIR=str(copy))
        )
        shutil.copy(cr_file, Path(app.config["DICOM_STORAGE_DIR"]) / cr_file.name)
        for _request in range(2):
            assert validate(app.test_client(), cr_file.name)["iod"]["ran"] is True

    assert load_count() == before + 1


def foreign_file(nested: bytes = b"") -> bytes:
    """Return a Secondary Capture Part 10 file without pixel data, ending in ``nested``.

    ``nested`` contains encoded elements with tags after (0010,0020), written
    by hand so that no recursive writer limits their depth.
    """
    dataset = Dataset()
    dataset.SOPClassUID = SC_STORAGE
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientID = "EXT-DEEP"
    dataset.Modality = "OT"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue() + nested


def content_sequence(content: bytes, depth: int) -> bytes:
    """Wrap ``content`` in ``depth`` Content Sequences of one item each, with defined lengths."""
    for _ in range(depth):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content
        content = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, len(item)) + item
    return content


def test_deep_sequence_values_checked(app: Flask, client: FlaskClient) -> None:
    # 2000 levels exceed Python's default recursion limit of 1000 however
    # few calls a level takes, so only a walk without recursion gets there.
    long_value = b"M" * 70
    header = struct.pack("<HH2sH", 0x0008, 0x0104, b"LO", len(long_value))
    nested = content_sequence(header + long_value, 2000)
    filename = store(app, lambda path: path.write_bytes(foreign_file(nested)))

    data = validate(client, filename)

    assert data["isValid"] is False
    assert (
        "ContentSequence item 1 / CodeMeaning (0008,0104) is 70 characters long; "
        "LO allows at most 64."
    ) in data["problems"]


def test_undefined_length_nesting_reported(app: Flask, client: FlaskClient) -> None:
    depth = 300
    sequence = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    nested = (sequence + item) * depth + (item_end + sequence_end) * depth
    filename = store(app, lambda path: path.write_bytes(foreign_file(nested)))

    data = validate(client, filename)

    assert data["isValid"] is False
    assert data["problems"] == [
        (
            f"{filename} could not be read as DICOM: its sequences are nested more "
            "deeply than pydicom can read (it reads each level with a recursive "
            "call). Check how the file was made."
        )
    ]


def test_sequence_items_checked_in_order(
    app: Flask, client: FlaskClient, cr_file: Path
) -> None:
    def add_items(dataset: Dataset) -> None:
        items = []
        for number in (1, 2):
            item = Dataset()
            item.CodeValue = "T-D3000"
            item.CodingSchemeDesignator = "SRT"
            item.CodeMeaning = "Chest"
            item.CodingSchemeVersion = "V" * (16 + number)
            items.append(item)
        dataset.AnatomicRegionSequence = items

    data = validate(client, store_changed(app, cr_file, add_items))

    messages = [error["message"] for error in data["valueErrors"]]
    assert messages == [
        (
            "AnatomicRegionSequence item 1 / CodingSchemeVersion (0008,0103) is 17 "
            "characters long; SH allows at most 16."
        ),
        (
            "AnatomicRegionSequence item 2 / CodingSchemeVersion (0008,0103) is 18 "
            "characters long; SH allows at most 16."
        ),
    ]
