"""Tests of the worklist routes against a real Orthanc with the worklist plugin.

Modalities are played by ``findscu -W``, run as a subprocess the way a
modality's worklist query would reach Orthanc.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from pydicom import dcmread
from pydicom.dataset import Dataset

from app.local_orthanc import LocalOrthanc
from app.storage import LOCK_FILE

ROUTE = "/api/orthanc/worklists"

ORDER = {
    "patientId": "PID-0001",
    "patientName": "Doe^Jane",
    "patientBirthDate": "1980-05-17",
    "patientSex": "F",
    "accessionNumber": "ACC20261205",
    "requestedProcedureID": "RP-0001",
    "requestedProcedureDescription": "Chest X-ray PA",
    "requestedProcedurePriority": "ROUTINE",
    "referringPhysician": "Smith^John",
    "requestingPhysician": "Brown^Anna",
    "institutionName": "General Hospital",
    "departmentName": "Radiology",
    "scheduledDate": "2026-12-05",
    "scheduledTime": "09:30",
    "modality": "CR",
    "scheduledStationAETitle": "CR_ROOM_1",
    "scheduledStationName": "CR1",
    "scheduledProcedureStepLocation": "Room 1",
    "scheduledProcedureStepID": "SPS-0001",
    "scheduledProcedureStepDescription": "Chest two views",
    "performingPhysician": "Jones^Mary",
}

# Return keys of the worklist queries, as a modality sends them.
STEP = "ScheduledProcedureStepSequence[0]"
RETURN_KEYS = [
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "ReferringPhysicianName",
    f"{STEP}.Modality",
    f"{STEP}.ScheduledStationAETitle",
    f"{STEP}.ScheduledProcedureStepStartDate",
    f"{STEP}.ScheduledProcedureStepStartTime",
    f"{STEP}.ScheduledProcedureStepID",
    f"{STEP}.ScheduledProcedureStepDescription",
    f"{STEP}.ScheduledPerformingPhysicianName",
]


def create(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    """Create an entry from ``ORDER`` with ``fields`` replaced, and return its data."""
    body = {**ORDER, **fields}
    response = client.post(ROUTE, json=body)
    assert response.status_code == 201, response.get_json()
    data: dict[str, Any] = response.get_json()["data"]
    return data


def query_worklist(
    orthanc: LocalOrthanc, folder: Path, *matching_keys: str
) -> list[Dataset]:
    """Send a Modality Worklist C-FIND with ``findscu -W`` and read the responses.

    The responses are extracted into a new folder under ``folder``.
    ``matching_keys`` are ``-k`` arguments such as ``PatientName=Doe*``; each
    replaces the empty return key of the same attribute.
    """
    responses_dir = Path(tempfile.mkdtemp(prefix="responses-", dir=folder))
    matched = {key.split("=", 1)[0] for key in matching_keys}
    keys = [key for key in RETURN_KEYS if key not in matched] + list(matching_keys)
    command = [
        "findscu", "-W",
        "-aet", "MODALITY",
        "-aec", orthanc.settings.aet,
        "--extract", "--output-directory", str(responses_dir),
    ]  # fmt: skip
    for key in keys:
        command += ["-k", key]
    command += ["127.0.0.1", str(orthanc.settings.dicom_port)]

    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=30, check=False
    )
    assert completed.returncode == 0, completed.stderr
    matches = [dcmread(path) for path in sorted(responses_dir.glob("rsp*.dcm"))]
    return sorted(matches, key=lambda match: str(match.get("AccessionNumber", "")))


def accession_numbers(matches: list[Dataset]) -> list[str]:
    return [str(match.AccessionNumber) for match in matches]


def step_of(dataset: Dataset) -> Dataset:
    sequence = dataset.ScheduledProcedureStepSequence
    assert len(sequence) == 1
    item: Dataset = sequence[0]
    return item


def folder_names(orthanc: LocalOrthanc) -> list[str]:
    """Return the files of the worklist folder, without the store's lock file."""
    folder = orthanc.settings.worklist_dir
    return sorted(path.name for path in folder.iterdir() if path.name != LOCK_FILE)


# Creation and the file written


def test_create_returns_filename_and_ids(
    client: FlaskClient, orthanc: LocalOrthanc
) -> None:
    response = client.post(ROUTE, json=ORDER)
    body = response.get_json()
    data = body["data"]

    assert response.status_code == 201
    assert body["success"] is True
    assert body["message"] == "Worklist created successfully"
    assert data["filename"] == "ACC20261205.wl"
    assert data["filepath"] == str(orthanc.settings.worklist_dir / "ACC20261205.wl")
    assert data["size"] == Path(data["filepath"]).stat().st_size
    assert data["accessionNumber"] == "ACC20261205"
    assert data["patientId"] == "PID-0001"
    assert data["createdAt"].endswith("Z")
    assert data["studyInstanceUID"].startswith("2.25.")
    assert data["specificCharacterSet"] is None


def test_file_puts_step_in_sequence_item(client: FlaskClient) -> None:
    data = create(client, studyInstanceUID="1.2.826.0.1.3680043.10.1")
    dataset = dcmread(data["filepath"])
    step = step_of(dataset)

    assert "SpecificCharacterSet" not in dataset
    assert dataset.PatientName == "Doe^Jane"
    assert dataset.PatientID == "PID-0001"
    assert dataset.PatientBirthDate == "19800517"
    assert dataset.PatientSex == "F"
    assert dataset.AccessionNumber == "ACC20261205"
    assert dataset.StudyInstanceUID == "1.2.826.0.1.3680043.10.1"
    assert dataset.RequestedProcedureID == "RP-0001"
    assert dataset.RequestedProcedureDescription == "Chest X-ray PA"
    assert dataset.RequestedProcedurePriority == "ROUTINE"
    assert dataset.ReferringPhysicianName == "Smith^John"
    assert dataset.RequestingPhysician == "Brown^Anna"
    assert dataset.InstitutionName == "General Hospital"
    assert dataset.InstitutionalDepartmentName == "Radiology"
    assert "Modality" not in dataset
    assert "ScheduledStationAETitle" not in dataset
    assert step.Modality == "CR"
    assert step.ScheduledStationAETitle == "CR_ROOM_1"
    assert step.ScheduledStationName == "CR1"
    assert step.ScheduledProcedureStepLocation == "Room 1"
    assert step.ScheduledProcedureStepStartDate == "20261205"
    assert step.ScheduledProcedureStepStartTime == "093000"
    assert step.ScheduledProcedureStepID == "SPS-0001"
    assert step.ScheduledProcedureStepDescription == "Chest two views"
    assert step.ScheduledPerformingPhysicianName == "Jones^Mary"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"


def test_minimal_body_gets_defaults(client: FlaskClient) -> None:
    response = client.post(
        ROUTE,
        json={
            "patientId": "P9",
            "patientName": "Roe^Rick",
            "studyDescription": "Knee MR",
        },
    )
    data = response.get_json()["data"]
    dataset = dcmread(data["filepath"])
    step = step_of(dataset)

    assert response.status_code == 201
    assert len(data["accessionNumber"]) == 16
    assert data["filename"] == f"{data['accessionNumber']}.wl"
    assert dataset.StudyInstanceUID == data["studyInstanceUID"]
    assert dataset.RequestedProcedureID == data["accessionNumber"]
    assert dataset.RequestedProcedureDescription == "Knee MR"
    assert step.Modality == "OT"
    assert step.ScheduledProcedureStepStartDate == time.strftime("%Y%m%d")
    assert len(step.ScheduledProcedureStepStartTime) == 6
    assert step.ScheduledProcedureStepID == data["accessionNumber"]


@pytest.mark.parametrize(
    ("date_field", "date", "time_field", "clock", "expected_time"),
    [
        ("scheduledDate", "20261205", "scheduledTime", "0930", "093000"),
        ("scheduledDate", "2026-12-05", "scheduledTime", "09:30:15", "093015"),
        ("scheduledProcedureStepStartDate", "2026-12-05", "scheduledProcedureStepStartTime", "093015", "093015"),
        ("scheduledProcedureStepStartDate", "20261205", "scheduledProcedureStepStartTime", "09:30", "093000"),
    ],
)  # fmt: skip
def test_date_and_time_forms(
    client: FlaskClient,
    date_field: str,
    date: str,
    time_field: str,
    clock: str,
    expected_time: str,
) -> None:
    body = {
        key: value
        for key, value in ORDER.items()
        if key not in ("scheduledDate", "scheduledTime")
    }
    response = client.post(ROUTE, json={**body, date_field: date, time_field: clock})
    step = step_of(dcmread(response.get_json()["data"]["filepath"]))

    assert response.status_code == 201
    assert step.ScheduledProcedureStepStartDate == "20261205"
    assert step.ScheduledProcedureStepStartTime == expected_time


@pytest.mark.parametrize(
    ("name", "charset"),
    [
        ("Müller^Jürgen", "ISO_IR 100"),
        ("Παπαδόπουλος^Γιώργος", "ISO_IR 192"),
        ("山田^太郎=やまだ^たろう", "ISO_IR 192"),
    ],
)
def test_character_set_follows_name(
    client: FlaskClient, name: str, charset: str
) -> None:
    data = create(client, patientName=name)
    dataset = dcmread(data["filepath"])

    assert data["specificCharacterSet"] == charset
    assert dataset.SpecificCharacterSet == charset
    assert str(dataset.PatientName) == name


def test_taken_accession_name_gets_generated_filename(client: FlaskClient) -> None:
    first = create(client)
    second = create(client, patientId="PID-0002")

    assert first["filename"] == "ACC20261205.wl"
    assert second["filename"].startswith("worklist_")
    assert second["filename"].endswith(".wl")
    assert dcmread(first["filepath"]).PatientID == "PID-0001"
    assert dcmread(second["filepath"]).PatientID == "PID-0002"


def test_concurrent_creates_get_distinct_files(
    app: Flask, orthanc: LocalOrthanc
) -> None:
    def post(_: int) -> str:
        response = app.test_client().post(ROUTE, json=ORDER)
        assert response.status_code == 201
        filename: str = response.get_json()["data"]["filename"]
        return filename

    with ThreadPoolExecutor(max_workers=4) as pool:
        filenames = list(pool.map(post, range(8)))

    assert len(set(filenames)) == 8
    assert filenames.count("ACC20261205.wl") == 1
    assert folder_names(orthanc) == sorted(filenames)


@pytest.mark.parametrize("accession", ["../../evil", "A/B", "ACC 1", ".hidden", "Ü123"])
def test_unsafe_accession_gets_generated_filename(
    client: FlaskClient, orthanc: LocalOrthanc, accession: str
) -> None:
    data = create(client, accessionNumber=accession)

    assert data["filename"].startswith("worklist_")
    assert Path(data["filepath"]).parent == orthanc.settings.worklist_dir.resolve()
    assert dcmread(data["filepath"]).AccessionNumber == accession
    assert folder_names(orthanc) == [data["filename"]]


# Validation


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("patientId", "", "Must not be empty."),
        ("patientId", "x" * 65, "Longer than 64 characters (LO)."),
        ("patientName", None, "Must not be null. Leave the field out to use its default."),
        ("patientName", "Doe^Jane\n(0010,0020) LO [X]", "Must not contain control characters such as line breaks (PN)."),
        ("patientName", "A^B^C^D^E^F", "At most 5 components FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX are allowed"),
        ("patientName", "Doe]^Jane\\x", "Must not contain a backslash, which separates values in DICOM (PN)."),
        ("patientBirthDate", "1980-02-30", "Not a real date in the form YYYYMMDD or YYYY-MM-DD (DA)"),
        ("patientSex", "X", "Must be M, F or O (CS)."),
        ("accessionNumber", "A" * 17, "Longer than 16 characters (SH)."),
        ("studyInstanceUID", "1.2.03", "Invalid UID (UI): A component must not start with 0 unless it is 0."),
        ("studyInstanceUID", "abc", "Invalid UID (UI): Only digits and '.' are allowed."),
        ("requestedProcedureID", "R" * 17, "Longer than 16 characters (SH)."),
        ("requestedProcedurePriority", "URGENT", "Must be one of STAT, HIGH, ROUTINE, MEDIUM, LOW (SH)."),
        ("requestedProcedureDescription", "x" * 65, "Longer than 64 characters (LO)."),
        ("referringPhysician", "a=b=c=d", "At most 3 component groups"),
        ("scheduledDate", "05.12.2026", "Not a real date in the form YYYYMMDD or YYYY-MM-DD (DA)"),
        ("scheduledTime", "24:00", "Not a valid time in the form HHMMSS, HHMM, HH:MM or HH:MM:SS (TM)"),
        ("scheduledTime", 930, "Not a valid string."),
        ("modality", "XX", "Unsupported modality 'XX'."),
        ("scheduledStationAETitle", "AE_TITLE_LONGER_THAN_16", "Longer than 16 characters (AE)."),
        ("scheduledStationAETitle", "CRÜ", "Only ASCII characters are allowed (AE)."),
        ("scheduledProcedureStepID", "", "Must not be empty."),
        ("performingPhysician", "x\x00y", "Must not contain control characters such as line breaks (PN)."),
        ("institutionName", "x\x85y", "Must not contain control characters such as line breaks (LO)."),
        ("unknownField", "x", "Unknown field. Check the spelling against the documented fields."),
    ],
)  # fmt: skip
def test_invalid_field_is_named(
    client: FlaskClient, orthanc: LocalOrthanc, field: str, value: Any, message: str
) -> None:
    response = client.post(ROUTE, json={**ORDER, field: value})
    body = response.get_json()

    assert response.status_code == 400
    assert body["success"] is False
    assert body["data"] is None
    assert list(body["errors"]) == [field]
    assert any(text.startswith(message) for text in body["errors"][field]), body[
        "errors"
    ]
    assert folder_names(orthanc) == []


@pytest.mark.parametrize("missing", ["patientId", "patientName"])
def test_required_field_missing(client: FlaskClient, missing: str) -> None:
    body = {key: value for key, value in ORDER.items() if key != missing}
    response = client.post(ROUTE, json=body)

    assert response.status_code == 400
    assert response.get_json()["errors"] == {
        missing: ["Missing data for required field."]
    }


def test_conflicting_date_aliases_rejected(client: FlaskClient) -> None:
    response = client.post(
        ROUTE, json={**ORDER, "scheduledProcedureStepStartDate": "2026-12-06"}
    )
    errors = response.get_json()["errors"]

    assert response.status_code == 400
    assert list(errors) == ["scheduledProcedureStepStartDate"]
    assert (
        "Send only one of scheduledDate and scheduledProcedureStepStartDate"
        in errors["scheduledProcedureStepStartDate"][0]
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "Missing JSON body."),
        (b"{not json", "Not valid JSON"),
        (b"[1, 2]", "Must be a JSON object, not an array."),
    ],
)
def test_invalid_body_rejected(client: FlaskClient, data: bytes, message: str) -> None:
    response = client.post(ROUTE, data=data, content_type="application/json")
    errors = response.get_json()["errors"]

    assert response.status_code == 400
    assert errors["body"][0].startswith(message)


def test_create_without_dump2dcm_writes_nothing(
    client: FlaskClient, orthanc: LocalOrthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    response = client.post(ROUTE, json=ORDER)

    assert response.status_code == 503
    assert "dump2dcm" in response.get_json()["message"]
    assert folder_names(orthanc) == []


# Queries from a modality with findscu -W


@pytest.fixture
def scheduled(client: FlaskClient) -> dict[str, dict[str, Any]]:
    """Four entries on two days, three modalities and three stations."""
    entries = {
        "ACC1": create(
            client,
            accessionNumber="ACC1",
            patientId="P1",
            patientName="Doe^Jane",
            scheduledDate="2026-12-05",
            modality="CR",
            scheduledStationAETitle="CR_ROOM_1",
        ),
        "ACC2": create(
            client,
            accessionNumber="ACC2",
            patientId="P2",
            patientName="Παπαδόπουλος^Γιώργος",
            scheduledDate="2026-12-05",
            modality="CT",
            scheduledStationAETitle="CT_ROOM_1",
        ),
        "ACC3": create(
            client,
            accessionNumber="ACC3",
            patientId="P3",
            patientName="山田^太郎",
            scheduledDate="2026-12-06",
            modality="MR",
            scheduledStationAETitle="MR_ROOM_1",
        ),
        "ACC4": create(
            client,
            accessionNumber="ACC4",
            patientId="P4",
            patientName="Müller^Jürgen",
            scheduledDate="2026-12-06",
            modality="CT",
            scheduledStationAETitle="CT_ROOM_1",
        ),
    }
    return entries


def test_findscu_by_date(
    scheduled: dict[str, Any], orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    matches = query_worklist(
        orthanc, tmp_path, f"{STEP}.ScheduledProcedureStepStartDate=20261205"
    )

    assert accession_numbers(matches) == ["ACC1", "ACC2"]
    first = matches[0]
    step = step_of(first)
    assert first.PatientName == "Doe^Jane"
    assert first.PatientID == "P1"
    assert first.PatientBirthDate == "19800517"
    assert first.StudyInstanceUID == scheduled["ACC1"]["studyInstanceUID"]
    assert first.RequestedProcedureID == "RP-0001"
    assert first.RequestedProcedureDescription == "Chest X-ray PA"
    assert first.ReferringPhysicianName == "Smith^John"
    assert step.Modality == "CR"
    assert step.ScheduledStationAETitle == "CR_ROOM_1"
    assert step.ScheduledProcedureStepStartDate == "20261205"
    assert step.ScheduledProcedureStepStartTime == "093000"
    assert step.ScheduledProcedureStepID == "SPS-0001"
    assert step.ScheduledProcedureStepDescription == "Chest two views"
    assert step.ScheduledPerformingPhysicianName == "Jones^Mary"


def test_findscu_by_date_range(
    scheduled: dict[str, Any], orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    matches = query_worklist(
        orthanc, tmp_path, f"{STEP}.ScheduledProcedureStepStartDate=20261206-20261231"
    )

    assert accession_numbers(matches) == ["ACC3", "ACC4"]


def test_findscu_by_modality(
    scheduled: dict[str, Any], orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    matches = query_worklist(orthanc, tmp_path, f"{STEP}.Modality=CT")

    assert accession_numbers(matches) == ["ACC2", "ACC4"]
    assert [step_of(match).Modality for match in matches] == ["CT", "CT"]


def test_findscu_by_station_ae_title(
    scheduled: dict[str, Any], orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    matches = query_worklist(
        orthanc, tmp_path, f"{STEP}.ScheduledStationAETitle=MR_ROOM_1"
    )

    assert accession_numbers(matches) == ["ACC3"]
    assert step_of(matches[0]).ScheduledStationAETitle == "MR_ROOM_1"
    assert str(matches[0].PatientName) == "山田^太郎"


def test_findscu_by_patient_name_wildcard(
    scheduled: dict[str, Any], orthanc: LocalOrthanc, tmp_path: Path
) -> None:
    matches = query_worklist(orthanc, tmp_path, "PatientName=Do*")

    assert accession_numbers(matches) == ["ACC1"]
    assert matches[0].PatientName == "Doe^Jane"


@pytest.mark.parametrize(
    ("pattern", "accession", "name"),
    [
        ("Παπ*", "ACC2", "Παπαδόπουλος^Γιώργος"),
        ("山田*", "ACC3", "山田^太郎"),
        ("Mü*", "ACC4", "Müller^Jürgen"),
    ],
)
def test_findscu_non_ascii_names(
    scheduled: dict[str, Any],
    orthanc: LocalOrthanc,
    tmp_path: Path,
    pattern: str,
    accession: str,
    name: str,
) -> None:
    matches = query_worklist(
        orthanc, tmp_path, "SpecificCharacterSet=ISO_IR 192", f"PatientName={pattern}"
    )

    assert accession_numbers(matches) == [accession]
    assert str(matches[0].PatientName) == name


def test_findscu_no_longer_returns_deleted_entry(
    scheduled: dict[str, Any],
    client: FlaskClient,
    orthanc: LocalOrthanc,
    tmp_path: Path,
) -> None:
    response = client.delete(f"{ROUTE}/ACC2.wl")
    matches = query_worklist(orthanc, tmp_path, f"{STEP}.Modality=CT")

    assert response.status_code == 200
    assert response.get_json()["message"] == "Worklist deleted successfully"
    assert response.get_json()["data"] == {"filename": "ACC2.wl"}
    assert accession_numbers(matches) == ["ACC4"]


def test_findscu_sees_replaced_entry(
    scheduled: dict[str, Any],
    client: FlaskClient,
    orthanc: LocalOrthanc,
    tmp_path: Path,
) -> None:
    body = {**ORDER, "accessionNumber": "ACC1", "patientId": "P1", "modality": "US",
            "scheduledStationAETitle": "US_ROOM_1"}  # fmt: skip
    response = client.put(f"{ROUTE}/ACC1.wl", json=body)
    matches = query_worklist(
        orthanc, tmp_path, f"{STEP}.ScheduledStationAETitle=US_ROOM_1"
    )

    assert response.status_code == 200
    assert accession_numbers(matches) == ["ACC1"]
    assert step_of(matches[0]).Modality == "US"
    assert matches[0].StudyInstanceUID == scheduled["ACC1"]["studyInstanceUID"]
    assert (
        query_worklist(orthanc, tmp_path, f"{STEP}.ScheduledStationAETitle=CR_ROOM_1")
        == []
    )


# From the order to the image in Orthanc


def test_instance_for_entry_lands_in_ordered_study(
    client: FlaskClient,
    orthanc: LocalOrthanc,
    orthanc_api: requests.Session,
) -> None:
    order = create(client, accessionNumber=f"LOOP{time.time_ns() % 10**10}")
    filename = order["filename"]

    response = client.post(
        f"{ROUTE}/{filename}/instances", json={"seriesDescription": "PA view"}
    )
    created = response.get_json()["data"]
    dataset = dcmread(created["filepath"])

    assert response.status_code == 201
    assert created["worklist"] == filename
    assert created["worklistRemoved"] is False
    assert created["uids"]["studyInstanceUID"] == order["studyInstanceUID"]
    assert dataset.StudyInstanceUID == order["studyInstanceUID"]
    assert dataset.AccessionNumber == order["accessionNumber"]
    assert dataset.PatientID == "PID-0001"
    assert dataset.PatientName == "Doe^Jane"
    assert dataset.PatientBirthDate == "19800517"
    assert dataset.StudyDescription == "Chest X-ray PA"
    assert dataset.StudyID == "RP-0001"
    assert dataset.Modality == "CR"
    assert dataset.SeriesDescription == "PA view"
    assert (orthanc.settings.worklist_dir / filename).exists()

    sent = client.post(f"/api/dicom/instances/{created['filename']}/send")
    assert sent.status_code == 200, sent.get_json()

    lookup = orthanc_api.post(
        f"{orthanc.settings.url}/tools/lookup",
        data=order["studyInstanceUID"],
        timeout=10,
    )
    studies = [match for match in lookup.json() if match["Type"] == "Study"]
    assert len(studies) == 1
    study = orthanc_api.get(
        f"{orthanc.settings.url}/studies/{studies[0]['ID']}", timeout=10
    ).json()
    assert study["MainDicomTags"]["AccessionNumber"] == order["accessionNumber"]
    assert study["MainDicomTags"]["StudyInstanceUID"] == order["studyInstanceUID"]
    assert study["PatientMainDicomTags"]["PatientID"] == "PID-0001"
    assert len(study["Series"]) == 1


def test_instance_for_entry_can_remove_entry(
    client: FlaskClient, orthanc: LocalOrthanc
) -> None:
    order = create(client)
    response = client.post(
        f"{ROUTE}/{order['filename']}/instances",
        json={"removeWorklist": True, "modality": "DX", "studyDescription": "Override"},
    )
    data = response.get_json()["data"]
    dataset = dcmread(data["filepath"])

    assert response.status_code == 201
    assert data["worklistRemoved"] is True
    assert folder_names(orthanc) == []
    assert dataset.Modality == "DX"
    assert dataset.StudyDescription == "Override"
    assert dataset.StudyInstanceUID == order["studyInstanceUID"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("patientID", "X", "Unknown field."),
        ("studyInstanceUID", "1.2.3", "Unknown field."),
        ("removeWorklist", "maybe", "Not a valid boolean."),
        ("modality", "XX", "Unsupported modality 'XX'."),
    ],
)
def test_instance_for_entry_rejects_bad_options(
    client: FlaskClient, orthanc: LocalOrthanc, field: str, value: Any, message: str
) -> None:
    order = create(client)
    response = client.post(
        f"{ROUTE}/{order['filename']}/instances", json={field: value}
    )
    errors = response.get_json()["errors"]

    assert response.status_code == 400
    assert errors[field][0].startswith(message)
    assert folder_names(orthanc) == [order["filename"]]


# Reading, replacing and listing


def test_get_returns_entry_fields(client: FlaskClient) -> None:
    order = create(client, patientName="Παπαδόπουλος^Γιώργος")
    response = client.get(f"{ROUTE}/{order['filename']}")
    data = response.get_json()["data"]

    assert response.status_code == 200
    assert data["filename"] == order["filename"]
    assert data["patientName"] == "Παπαδόπουλος^Γιώργος"
    assert data["specificCharacterSet"] == "ISO_IR 192"
    assert data["patientBirthDate"] == "19800517"
    assert data["accessionNumber"] == "ACC20261205"
    assert data["studyInstanceUID"] == order["studyInstanceUID"]
    assert data["modality"] == "CR"
    assert data["scheduledStationAETitle"] == "CR_ROOM_1"
    assert data["scheduledDate"] == "20261205"
    assert data["scheduledTime"] == "093000"
    assert data["performingPhysician"] == "Jones^Mary"
    assert data["scheduledProcedureStepStatus"] == "SCHEDULED"


def test_put_replaces_and_keeps_order_ids(client: FlaskClient) -> None:
    order = create(client)
    body = {"patientId": "PID-0001", "patientName": "Doe^Janet", "modality": "MG"}
    response = client.put(f"{ROUTE}/{order['filename']}", json=body)
    data = response.get_json()["data"]
    dataset = dcmread(order["filepath"])

    assert response.status_code == 200
    assert response.get_json()["message"] == "Worklist replaced successfully"
    assert data["filename"] == order["filename"]
    assert dataset.PatientName == "Doe^Janet"
    assert step_of(dataset).Modality == "MG"
    assert dataset.StudyInstanceUID == order["studyInstanceUID"]
    assert dataset.AccessionNumber == order["accessionNumber"]
    assert (
        "RequestedProcedureDescription" not in dataset
        or not dataset.RequestedProcedureDescription
    )


def test_invalid_put_leaves_file_unchanged(client: FlaskClient) -> None:
    order = create(client)
    before = Path(order["filepath"]).read_bytes()
    response = client.put(
        f"{ROUTE}/{order['filename']}", json={**ORDER, "patientSex": "Q"}
    )

    assert response.status_code == 400
    assert list(response.get_json()["errors"]) == ["patientSex"]
    assert Path(order["filepath"]).read_bytes() == before


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("put", ""), ("delete", ""), ("post", "/instances")],
)
def test_unknown_filename_is_404(client: FlaskClient, method: str, suffix: str) -> None:
    response = client.open(
        f"{ROUTE}/missing.wl{suffix}", method=method.upper(), json=ORDER
    )
    body = response.get_json()

    assert response.status_code == 404
    assert body["success"] is False
    assert body["message"] == "Worklist 'missing.wl' not found."


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fsecret.wl",
        "..%2Fsecret.wl",
        "%2Fetc%2Fpasswd",
        "secret.wl%00.wl",
        "..",
        ".hidden.wl",
        "secret.dcm",
        "%2E%2E%2Fsecret.wl",
    ],
)
def test_traversal_names_rejected(
    client: FlaskClient, orthanc: LocalOrthanc, name: str
) -> None:
    secret = orthanc.settings.worklist_dir.parent / "secret.wl"
    secret.write_bytes(b"outside")
    try:
        responses = [
            client.get(f"{ROUTE}/{name}"),
            client.delete(f"{ROUTE}/{name}"),
            client.put(f"{ROUTE}/{name}", json=ORDER),
            client.post(f"{ROUTE}/{name}/instances"),
        ]
        for response in responses:
            assert response.status_code in (400, 404), response.get_json()
            assert response.get_json()["success"] is False
        assert secret.read_bytes() == b"outside"
    finally:
        secret.unlink()


def test_traversal_name_reaching_view_names_field(client: FlaskClient) -> None:
    response = client.get(f"{ROUTE}/secret.wl%00.wl")
    body = response.get_json()

    assert response.status_code == 400
    assert "filename" in body["errors"]


def test_link_leading_outside_is_404(
    client: FlaskClient, orthanc: LocalOrthanc
) -> None:
    target = orthanc.settings.worklist_dir.parent / "target.wl"
    target.write_bytes(b"outside")
    link = orthanc.settings.worklist_dir / "link.wl"
    link.symlink_to(target)
    try:
        assert client.get(f"{ROUTE}/link.wl").status_code == 404
        assert client.delete(f"{ROUTE}/link.wl").status_code == 404
        assert target.read_bytes() == b"outside"
    finally:
        link.unlink()
        target.unlink()


@pytest.fixture
def listed(client: FlaskClient) -> None:
    """Five entries on three days, some sharing a modality, station or patient."""
    rows = [
        ("L1", "P1", "2026-12-01", "CR", "CR_ROOM_1"),
        ("L2", "P2", "2026-12-02", "CT", "CT_ROOM_1"),
        ("L3", "P1", "2026-12-02", "CT", "CT_ROOM_2"),
        ("L4", "P3", "2026-12-03", "MR", "MR_ROOM_1"),
        ("L5", "P4", "2026-12-03", "CR", "CR_ROOM_1"),
    ]
    for accession, patient, date, modality, station in rows:
        create(
            client, accessionNumber=accession, patientId=patient, scheduledDate=date,
            modality=modality, scheduledStationAETitle=station,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["L1", "L2", "L3", "L4", "L5"]),
        ("date=2026-12-02", ["L2", "L3"]),
        ("date=20261203", ["L4", "L5"]),
        ("dateFrom=2026-12-02", ["L2", "L3", "L4", "L5"]),
        ("dateTo=20261202", ["L1", "L2", "L3"]),
        ("dateFrom=20261202&dateTo=20261202", ["L2", "L3"]),
        ("modality=CR", ["L1", "L5"]),
        ("scheduledStationAETitle=CT_ROOM_2", ["L3"]),
        ("patientId=P1", ["L1", "L3"]),
        ("accessionNumber=L4", ["L4"]),
        ("modality=CT&patientId=P1", ["L3"]),
        ("modality=US", []),
    ],
)
def test_list_filters(
    client: FlaskClient, listed: None, query: str, expected: list[str]
) -> None:
    response = client.get(f"{ROUTE}?{query}")
    data = response.get_json()["data"]

    assert response.status_code == 200
    assert data["count"] == len(expected)
    assert sorted(item["accessionNumber"] for item in data["files"]) == expected
    for item in data["files"]:
        assert {"filename", "filepath", "size", "created", "modified"} <= set(item)


def test_list_paging(client: FlaskClient, listed: None) -> None:
    everything = client.get(ROUTE).get_json()["data"]["files"]
    first = client.get(f"{ROUTE}?limit=2").get_json()["data"]
    rest = client.get(f"{ROUTE}?limit=2&offset=2").get_json()["data"]
    filtered = client.get(f"{ROUTE}?modality=CT&limit=1&offset=1").get_json()["data"]

    assert [item["filename"] for item in first["files"]] == [
        item["filename"] for item in everything[:2]
    ]
    assert [item["filename"] for item in rest["files"]] == [
        item["filename"] for item in everything[2:4]
    ]
    assert first["count"] == 5
    assert first["limit"] == 2
    assert rest["offset"] == 2
    assert filtered["count"] == 2
    assert len(filtered["files"]) == 1


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("date=2026-13-01", "date", "Not a real date"),
        ("date=20261201&dateFrom=20261201", "date", "Send either date or the range"),
        ("dateFrom=20261203&dateTo=20261201", "dateFrom", "Must not be after dateTo."),
        ("limit=0", "limit", "Must be from 1 to 1000."),
        ("offset=-1", "offset", "Must be 0 or more."),
        ("colour=red", "colour", "Unknown field."),
    ],
)
def test_list_rejects_bad_query(
    client: FlaskClient, query: str, field: str, message: str
) -> None:
    response = client.get(f"{ROUTE}?{query}")
    errors = response.get_json()["errors"]

    assert response.status_code == 400
    assert errors[field][0].startswith(message)


def test_stats_counts_entries(client: FlaskClient, listed: None) -> None:
    response = client.get(f"{ROUTE}/stats")
    data = response.get_json()["data"]

    assert response.status_code == 200
    assert data["count"] == 5
    assert data["unreadable"] == 0
    assert data["totalSize"] > 0
    assert data["byModality"] == {"CR": 2, "CT": 2, "MR": 1}
    assert data["byScheduledDate"] == {"20261201": 1, "20261202": 2, "20261203": 2}
    assert data["byStationAETitle"]["CR_ROOM_1"] == 2
    assert data["oldest"] <= data["newest"]


def test_stats_and_list_report_unreadable_file(
    client: FlaskClient, orthanc: LocalOrthanc
) -> None:
    create(client)
    (orthanc.settings.worklist_dir / "broken.wl").write_bytes(b"not DICOM")

    stats = client.get(f"{ROUTE}/stats").get_json()["data"]
    listing = client.get(ROUTE).get_json()["data"]
    broken = [item for item in listing["files"] if item["filename"] == "broken.wl"]

    assert stats["count"] == 2
    assert stats["unreadable"] == 1
    assert broken[0]["readable"] is False
    assert client.get(f"{ROUTE}?modality=CR").get_json()["data"]["count"] == 1


def test_get_unreadable_file_is_503(client: FlaskClient, orthanc: LocalOrthanc) -> None:
    (orthanc.settings.worklist_dir / "broken.wl").write_bytes(b"not DICOM")
    response = client.get(f"{ROUTE}/broken.wl")

    assert response.status_code == 503
    assert "broken.wl is not a readable DICOM file" in response.get_json()["message"]


def test_put_repairs_unreadable_file(
    client: FlaskClient, orthanc: LocalOrthanc
) -> None:
    path = orthanc.settings.worklist_dir / "broken.wl"
    path.write_bytes(b"not DICOM")
    response = client.put(f"{ROUTE}/broken.wl", json=ORDER)

    assert response.status_code == 200
    assert dcmread(path).AccessionNumber == "ACC20261205"
    assert client.get(f"{ROUTE}/broken.wl").status_code == 200


# Batch, cleanup and sample


def test_batch_with_one_bad_item(client: FlaskClient, orthanc: LocalOrthanc) -> None:
    items = [
        {**ORDER, "accessionNumber": "B1"},
        {**ORDER, "accessionNumber": "B2", "patientSex": "U"},
        {**ORDER, "accessionNumber": "B3"},
    ]
    response = client.post(f"{ROUTE}/batch", json=items)
    data = response.get_json()["data"]

    assert response.status_code == 201
    assert data["total"] == 3
    assert data["succeeded"] == 2
    assert data["failed"] == 1
    assert data["results"][0]["data"]["filename"] == "B1.wl"
    assert data["results"][1]["success"] is False
    assert data["results"][1]["errors"] == {"patientSex": ["Must be M, F or O (CS)."]}
    assert data["results"][2]["message"] == "Worklist created successfully"
    assert folder_names(orthanc) == ["B1.wl", "B3.wl"]


def test_batch_accepts_wrapped_array(client: FlaskClient) -> None:
    response = client.post(
        f"{ROUTE}/batch", json={"worklists": [ORDER, "not an object"]}
    )
    data = response.get_json()["data"]

    assert response.status_code == 201
    assert data["succeeded"] == 1
    assert data["results"][1]["errors"] == {
        "body": ["Must be a JSON object, not a string."]
    }


def test_batch_rejects_non_array(client: FlaskClient) -> None:
    response = client.post(f"{ROUTE}/batch", json=ORDER)

    assert response.status_code == 400
    assert "Must be a JSON array" in response.get_json()["errors"]["body"][0]


def test_cleanup_by_days_old(client: FlaskClient, orthanc: LocalOrthanc) -> None:
    old = create(client, accessionNumber="OLD1")
    create(client, accessionNumber="NEW1")
    forty_days_ago = time.time() - 40 * 86400
    os.utime(old["filepath"], (forty_days_ago, forty_days_ago))

    response = client.post(f"{ROUTE}/cleanup", json={"daysOld": 30})
    data = response.get_json()["data"]

    assert response.status_code == 200
    assert data["deleted"] == 1
    assert data["files"] == ["OLD1.wl"]
    assert data["remaining"] == 1
    assert folder_names(orthanc) == ["NEW1.wl"]


def test_cleanup_defaults_to_30_days(
    client: FlaskClient, orthanc: LocalOrthanc
) -> None:
    old = create(client, accessionNumber="OLD1")
    twenty_days_ago = time.time() - 20 * 86400
    os.utime(old["filepath"], (twenty_days_ago, twenty_days_ago))

    response = client.post(f"{ROUTE}/cleanup")
    data = response.get_json()["data"]

    assert response.status_code == 200
    assert data["daysOld"] == 30
    assert data["deleted"] == 0
    assert folder_names(orthanc) == ["OLD1.wl"]


@pytest.mark.parametrize(
    ("days", "message"),
    [
        (-1, "Must be a whole number of days from 0 to 36500."),
        ("7", "Not a valid integer."),
    ],
)
def test_cleanup_rejects_bad_days(client: FlaskClient, days: Any, message: str) -> None:
    response = client.post(f"{ROUTE}/cleanup", json={"daysOld": days})

    assert response.status_code == 400
    assert response.get_json()["errors"] == {"daysOld": [message]}


def test_sample_entry(client: FlaskClient) -> None:
    response = client.post(f"{ROUTE}/sample")
    data = response.get_json()["data"]
    dataset = dcmread(data["filepath"])

    assert response.status_code == 201
    assert response.get_json()["message"] == "Sample worklist created successfully"
    assert data["patientId"] == "123456"
    assert step_of(dataset).Modality == "CR"
    assert step_of(dataset).ScheduledProcedureStepStartDate == time.strftime("%Y%m%d")


def test_sample_overrides(client: FlaskClient) -> None:
    response = client.post(
        f"{ROUTE}/sample", json={"patientName": "Ωμέγα^Άλφα", "modality": "US"}
    )
    data = response.get_json()["data"]
    dataset = dcmread(data["filepath"])

    assert response.status_code == 201
    assert str(dataset.PatientName) == "Ωμέγα^Άλφα"
    assert step_of(dataset).Modality == "US"
    assert client.post(f"{ROUTE}/sample", json={"modality": "XX"}).status_code == 400
