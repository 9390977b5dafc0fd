"""Conformance of written instances: dciodvfy, character sets and the modality table.

Every supported modality is written from a minimal and from a full request
body, and each file is checked once with ``dciodvfy`` (dicom3tools). Text
outside ASCII is read back with pydicom and from a real Orthanc after a
C-STORE.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from flask.testing import FlaskClient

from app.local_orthanc import LocalOrthanc
from app.modalities import load_table
from app.schemas import InstanceSchema
from app.uids import generate_uid, uid_problems

from .support import CONTRACT_EXAMPLE

DCIODVFY = shutil.which("dciodvfy")

# The dciodvfy warnings that docs/conformance.md lists as acceptable, matched
# by a fragment of their text. Any other warning fails the test.
ACCEPTED_WARNINGS = {
    # Laterality (0020,0060) is sent empty when the body part is absent or
    # paired, because no request field states the laterality.
    "is only permitted to be empty when actually unknown; should be absent",
    # The requested Modality SC is written as given, and is not a defined
    # term of Modality (0008,0060).
    "Unrecognized defined term <SC> for value 1 of attribute <Modality>",
}

FULL_BODY: dict[str, Any] = {
    **CONTRACT_EXAMPLE,
    "studyDate": "2024-03-01",
    "studyTime": "08:30:15",
    "studyID": "STUDY7",
    "seriesNumber": 3,
    "instanceNumber": 12,
    "stationName": "ROOM1",
    "bodyPartExamined": "CHEST",
    "laterality": "B",
}

# InstanceSchema fields that replace the generated image with supplied
# content (img2dcm or pdf2dcm), so they are not part of the full body.
CONTENT_FIELDS = {"image", "pdf", "documentTitle"}

ALL_CODES = load_table().codes()


def dciodvfy_findings(path: Path) -> tuple[list[str], list[str]]:
    """Run ``dciodvfy`` once on ``path`` and return its error and warning lines."""
    assert DCIODVFY is not None, "dciodvfy (Debian package dicom3tools) is not installed."
    completed = subprocess.run(
        [DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = (completed.stdout + completed.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def create(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    """Create an instance and return the response data, failing on any other status."""
    response = client.post("/api/dicom/instances", json=body)
    assert response.status_code == 201, response.get_json()
    data: dict[str, Any] = response.get_json()["data"]
    return data


def full_body(modality: str) -> dict[str, Any]:
    return {
        **FULL_BODY,
        "modality": modality,
        "studyInstanceUID": generate_uid(),
        "seriesInstanceUID": generate_uid(),
    }


def test_full_body_sets_every_schema_field() -> None:
    body = full_body("CT")
    missing = set(InstanceSchema().fields) - set(body) - CONTENT_FIELDS

    assert missing == set()
    assert InstanceSchema().load(body)["patientID"] == body["patientID"]


@pytest.mark.parametrize("kind", ["minimal", "full"])
@pytest.mark.parametrize("modality", ALL_CODES)
def test_instance_passes_dciodvfy(client: FlaskClient, modality: str, kind: str) -> None:
    body = (
        {"patientID": "X", "modality": modality} if kind == "minimal" else full_body(modality)
    )
    data = create(client, body)
    path = Path(data["filepath"])

    errors, warnings = dciodvfy_findings(path)
    unexpected = [
        line
        for line in warnings
        if not any(fragment in line for fragment in ACCEPTED_WARNINGS)
    ]
    assert errors == []
    assert unexpected == []

    report = client.get(f"/api/dicom/instances/{data['filename']}/validate").get_json()["data"]
    assert report["iod"]["ran"] is True
    assert report["iod"]["errors"] == 0, report["iod"]["findings"]
    assert report["isValid"] is True

    dataset = pydicom.dcmread(path)
    expected_class = load_table().lookup(modality).sop_class_uid
    assert dataset.SOPClassUID == expected_class
    assert data["sopClassUID"] == expected_class
    assert dataset.Modality == modality

    uids = data["uids"]
    assert dataset.StudyInstanceUID == uids["studyInstanceUID"]
    assert dataset.SeriesInstanceUID == uids["seriesInstanceUID"]
    assert dataset.SOPInstanceUID == uids["sopInstanceUID"]
    for uid in uids.values():
        assert uid_problems(uid) == []
    assert len(set(uids.values())) == 3

    if kind == "full":
        assert uids["studyInstanceUID"] == body["studyInstanceUID"]
        assert uids["seriesInstanceUID"] == body["seriesInstanceUID"]
        assert dataset.PatientName == body["patientName"]
        assert dataset.BodyPartExamined == "CHEST"


def test_dx_writes_anatomic_region_code(client: FlaskClient) -> None:
    data = create(client, full_body("DX"))
    dataset = pydicom.dcmread(data["filepath"])

    region = dataset.AnatomicRegionSequence
    assert len(region) == 1
    assert region[0].CodeValue == load_table().anatomic_regions["CHEST"].code_value
    assert region[0].CodingSchemeDesignator == "SCT"
    assert dataset.ImageLaterality == "B"
    assert "Laterality" not in dataset


@pytest.mark.parametrize(
    ("body_part", "laterality_written"),
    [(None, True), ("CHEST", False), ("KNEE", True), ("SELLA", True)],
)
def test_laterality_follows_body_part(
    client: FlaskClient, body_part: str | None, laterality_written: bool
) -> None:
    body: dict[str, Any] = {"patientID": "X", "modality": "CT"}
    if body_part is not None:
        body["bodyPartExamined"] = body_part
    dataset = pydicom.dcmread(create(client, body)["filepath"])

    assert ("Laterality" in dataset) is laterality_written
    if laterality_written:
        assert dataset.Laterality == ""


def test_modalities_route_lists_table(client: FlaskClient) -> None:
    response = client.get("/api/dicom/modalities")
    listed = {item["modality"]: item for item in response.get_json()["data"]}
    table = load_table()

    assert response.status_code == 200
    assert sorted(listed) == table.codes()
    for code in ["CR", "DX", "CT", "MR", "US", "MG", "XA", "NM", "PT", "SC", "OT"]:
        assert code in listed
    for code, item in listed.items():
        assert item["sopClassUID"] == table.lookup(code).sop_class_uid
        assert item["sopClassName"] == table.lookup(code).sop_class_name
    assert listed["OT"]["sopClassUID"] == "1.2.840.10008.5.1.4.1.1.7"
    assert listed["DX"]["sopClassUID"] == "1.2.840.10008.5.1.4.1.1.1.1"
    assert listed["MG"]["sopClassUID"] == "1.2.840.10008.5.1.4.1.1.1.2"


# Patient names with the Specific Character Set (0008,0005) each needs.
# The Japanese and Chinese names use the three PN component groups
# (alphabetic=ideographic=phonetic) of PS3.5 section 6.2.1.
NAMES = {
    "latin1": ("Müller^Jörg", "ISO_IR 100"),
    "greek": ("Παπαδόπουλος^Γιώργος", "ISO_IR 192"),
    "cyrillic": ("Иванов^Пётр^Сергеевич", "ISO_IR 192"),
    "turkish": ("Şahin^Gülşen", "ISO_IR 192"),
    "japanese": ("Yamada^Tarou=山田^太郎=やまだ^たろう", "ISO_IR 192"),
    "chinese": ("Wang^XiaoDong=王^小东", "ISO_IR 192"),
    "indonesian": ("Siti^Nurhaliza", None),
}


def orthanc_tags(
    orthanc: LocalOrthanc, session: requests.Session, sop_instance_uid: str
) -> dict[str, Any]:
    """Return Orthanc's simplified tags of the instance with ``sop_instance_uid``."""
    base = orthanc.settings.url
    found = session.post(f"{base}/tools/lookup", data=sop_instance_uid, timeout=10)
    found.raise_for_status()
    ids = [item["ID"] for item in found.json() if item["Type"] == "Instance"]
    assert len(ids) == 1, found.json()

    tags = session.get(f"{base}/instances/{ids[0]}/simplified-tags", timeout=10)
    tags.raise_for_status()
    result: dict[str, Any] = tags.json()
    return result


@pytest.mark.parametrize("language", sorted(NAMES))
def test_name_round_trips_through_orthanc(
    client: FlaskClient,
    orthanc: LocalOrthanc,
    orthanc_api: requests.Session,
    language: str,
) -> None:
    name, charset = NAMES[language]
    body = {
        "patientID": f"CHARSET-{language}",
        "patientName": name,
        "referringPhysicianName": name,
        "modality": "CT",
    }
    data = create(client, body)

    assert data["specificCharacterSet"] == charset
    dataset = pydicom.dcmread(data["filepath"])
    assert dataset.get("SpecificCharacterSet") == charset
    assert str(dataset.PatientName) == name
    assert str(dataset.ReferringPhysicianName) == name

    sent = client.post(f"/api/dicom/instances/{data['filename']}/send")
    assert sent.status_code == 200, sent.get_json()
    tags = orthanc_tags(orthanc, orthanc_api, data["uids"]["sopInstanceUID"])
    assert tags["PatientName"] == name
    assert tags["ReferringPhysicianName"] == name
    assert tags["PatientID"] == body["patientID"]


def test_latin1_and_other_text_use_utf8(client: FlaskClient) -> None:
    body = {
        "patientID": "X",
        "patientName": "Müller^Jörg",
        "institutionName": "Πανεπιστημιακό Νοσοκομείο",
    }
    data = create(client, body)
    dataset = pydicom.dcmread(data["filepath"])

    assert data["specificCharacterSet"] == "ISO_IR 192"
    assert dataset.SpecificCharacterSet == "ISO_IR 192"
    assert str(dataset.PatientName) == body["patientName"]
    assert dataset.InstitutionName == body["institutionName"]


def test_ascii_text_has_no_character_set(client: FlaskClient) -> None:
    dataset = pydicom.dcmread(create(client, {"patientID": "X"})["filepath"])

    assert "SpecificCharacterSet" not in dataset


# Fields, their value representation, maximum length in characters and a
# character that takes two or more bytes in UTF-8.
LENGTH_CASES = [
    ("institutionName", "LO", 64, "Ж"),
    ("studyDescription", "LO", 64, "漢"),
    ("accessionNumber", "SH", 16, "Ω"),
    ("stationName", "SH", 16, "é"),
]


@pytest.mark.parametrize(("field", "vr", "maximum", "character"), LENGTH_CASES)
def test_length_limit_counts_characters(
    client: FlaskClient, field: str, vr: str, maximum: int, character: str
) -> None:
    text = character * maximum
    assert len(text.encode("utf-8")) > maximum

    data = create(client, {"patientID": "X", field: text})
    dataset = pydicom.dcmread(data["filepath"])
    keyword = {
        "institutionName": "InstitutionName",
        "studyDescription": "StudyDescription",
        "accessionNumber": "AccessionNumber",
        "stationName": "StationName",
    }[field]
    assert dataset[keyword].value == text

    response = client.post(
        "/api/dicom/instances", json={"patientID": "X", field: text + character}
    )
    assert response.status_code == 400
    messages = response.get_json()["errors"][field]
    assert f"Longer than {maximum} characters ({vr})." in messages


def test_person_name_group_limit_counts_characters(client: FlaskClient) -> None:
    group = "山" * 64
    accepted = client.post(
        "/api/dicom/instances", json={"patientID": "X", "patientName": f"Yamada={group}"}
    )
    rejected = client.post(
        "/api/dicom/instances",
        json={"patientID": "X", "patientName": f"Yamada={group}山"},
    )

    assert accepted.status_code == 201
    assert rejected.status_code == 400
    assert rejected.get_json()["errors"]["patientName"] == [
        "Longer than 64 characters in one component group (PN)."
    ]


@pytest.mark.parametrize(
    ("modality", "body_part", "laterality", "keyword"),
    [("CR", "KNEE", "L", "Laterality"), ("CT", "HAND", "R", "Laterality"),
     ("DX", "KNEE", "R", "ImageLaterality"), ("MG", "BREAST", "L", "ImageLaterality")],
)  # fmt: skip
def test_requested_laterality_is_written(
    client: FlaskClient, modality: str, body_part: str, laterality: str, keyword: str
) -> None:
    body = {"patientID": "X", "modality": modality, "bodyPartExamined": body_part,
            "laterality": laterality}  # fmt: skip

    data = create(client, body)
    dataset = pydicom.dcmread(data["filepath"])
    errors, _ = dciodvfy_findings(Path(data["filepath"]))

    assert dataset[keyword].value == laterality
    assert errors == []


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [({"modality": "DX", "bodyPartExamined": "SELLA"}, "bodyPartExamined", "Anatomic Region"),
     ({"modality": "MG", "laterality": "U"}, "laterality", "paired"),
     ({"modality": "CR", "laterality": "X"}, "laterality", "Must be R, L, B")],
)  # fmt: skip
def test_anatomy_the_iod_cannot_code_is_rejected(
    client: FlaskClient, body: dict[str, Any], field: str, message: str
) -> None:
    response = client.post("/api/dicom/instances", json={"patientID": "X", **body})
    errors = response.get_json()["errors"]

    assert response.status_code == 400
    assert list(errors) == [field]
    assert message in errors[field][0]
