"""Tests of the instance routes under /api/dicom, against real DCMTK and Orthanc."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.local_orthanc import LocalOrthanc

from .support import CONTRACT_EXAMPLE, app_config

FILENAME = re.compile(r"^instance_\d+\.dcm$")


def create(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/dicom/instances", json=body)
    assert response.status_code == 201, response.get_json()
    data: dict[str, Any] = response.get_json()["data"]
    return data


def test_create_contract_example(client: FlaskClient, app: Flask) -> None:
    response = client.post("/api/dicom/instances", json=CONTRACT_EXAMPLE)
    body = response.get_json()
    data = body["data"]

    assert response.status_code == 201
    assert body["success"] is True
    assert body["message"] == "DICOM instance created successfully"
    assert FILENAME.match(data["filename"])
    assert Path(data["filepath"]).parent == Path(app.config["DICOM_STORAGE_DIR"]).resolve()
    for key in ("studyInstanceUID", "seriesInstanceUID", "sopInstanceUID"):
        assert data["uids"][key].startswith("2.25.")

    dataset = pydicom.dcmread(data["filepath"])
    assert dataset.PatientID == "PID-0001"
    assert str(dataset.PatientName) == "Doe^Jane"
    assert dataset.PatientBirthDate == "19800517"
    assert dataset.PatientSex == "F"
    assert dataset.Modality == "CR"
    assert dataset.AccessionNumber == "ACC20250801"
    assert dataset.StudyDescription == "Chest X-ray"
    assert dataset.SeriesDescription == "PA view"
    assert dataset.InstitutionName == "General Hospital"
    assert str(dataset.ReferringPhysicianName) == "Smith^John"
    assert str(dataset.PerformingPhysicianName) == "Jones^Mary"
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
    assert dataset.StudyInstanceUID == data["uids"]["studyInstanceUID"]
    assert dataset.SeriesInstanceUID == data["uids"]["seriesInstanceUID"]
    assert dataset.SOPInstanceUID == data["uids"]["sopInstanceUID"]
    assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID


def test_contract_example_passes_dciodvfy(client: FlaskClient) -> None:
    data = create(client, CONTRACT_EXAMPLE)

    result = subprocess.run(
        ["dciodvfy", data["filepath"]], capture_output=True, text=True, check=False
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]

    assert "CRImage" in result.stderr
    assert errors == []


def test_create_minimal_body(client: FlaskClient) -> None:
    data = create(client, {"patientID": "X"})
    dataset = pydicom.dcmread(data["filepath"])

    assert dataset.PatientID == "X"
    assert dataset.Modality == "OT"
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert len(dataset.StudyDate) == 8
    assert len(dataset.StudyTime) == 6
    assert "PatientName" in dataset
    assert dataset.PatientName == ""


def test_create_into_existing_study(client: FlaskClient) -> None:
    first = create(client, {"patientID": "X", "modality": "CR"})
    study = first["uids"]["studyInstanceUID"]
    series = first["uids"]["seriesInstanceUID"]

    second = create(
        client,
        {"patientID": "X", "modality": "CR", "studyInstanceUID": study,
         "seriesInstanceUID": series, "instanceNumber": 2},
    )  # fmt: skip

    assert second["uids"]["studyInstanceUID"] == study
    assert second["uids"]["seriesInstanceUID"] == series
    assert second["uids"]["sopInstanceUID"] != first["uids"]["sopInstanceUID"]
    assert pydicom.dcmread(second["filepath"]).InstanceNumber == 2


def test_create_accepts_dicom_date_and_time_forms(client: FlaskClient) -> None:
    data = create(
        client,
        {"patientID": "X", "patientBirthDate": "19991231", "studyDate": "2024-02-29",
         "studyTime": "07:05"},
    )  # fmt: skip
    dataset = pydicom.dcmread(data["filepath"])

    assert dataset.PatientBirthDate == "19991231"
    assert dataset.StudyDate == "20240229"
    assert dataset.StudyTime == "070500"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("patientID", "", "Must not be empty."),
        ("patientID", "x" * 65, "Longer than 64 characters (LO)."),
        ("patientID", 12, "Not a valid string."),
        ("patientID", None, "Must not be null"),
        ("patientName", "A^B^C^D^E^F", "At most 5 components"),
        ("patientName", "A=B=C=D", "At most 3 component groups"),
        ("patientName", "A" * 65, "Longer than 64 characters in one component group (PN)."),
        ("patientBirthDate", "20230230", "Not a real date"),
        ("patientBirthDate", "1980/01/01", "Not a real date"),
        ("patientSex", "X", "Must be M, F or O (CS)."),
        ("studyDescription", "line\nbreak", "control characters"),
        ("seriesDescription", "a\\b", "backslash"),
        ("modality", "ZZ", "Unsupported modality 'ZZ'"),
        ("accessionNumber", "A" * 17, "Longer than 16 characters (SH)."),
        ("institutionName", "x" * 65, "Longer than 64 characters (LO)."),
        ("referringPhysicianName", "A^B^C^D^E^F", "At most 5 components"),
        ("performingPhysicianName", "tab\there", "control characters"),
        ("studyTime", "25:00", "Not a valid time"),
        ("seriesNumber", "abc", "Must be a whole number (IS)."),
        ("studyInstanceUID", "1.2.03", "must not start with 0"),
        ("seriesInstanceUID", "1.2.abc", "Only digits and '.'"),
        ("bodyPartExamined", "chest", "Only A-Z, 0-9, space and underscore"),
    ],
)
def test_create_rejects_invalid_field(
    client: FlaskClient, field: str, value: Any, message: str
) -> None:
    body = {"patientID": "X", field: value}

    response = client.post("/api/dicom/instances", json=body)
    envelope = response.get_json()

    assert response.status_code == 400
    assert envelope["success"] is False
    assert envelope["data"] is None
    assert list(envelope["errors"]) == [field]
    assert any(message in text for text in envelope["errors"][field])


def test_create_requires_patient_id(client: FlaskClient) -> None:
    response = client.post("/api/dicom/instances", json={"patientName": "Doe^J"})

    assert response.status_code == 400
    assert response.get_json()["errors"]["patientID"] == ["Missing data for required field."]


def test_create_names_unknown_fields(client: FlaskClient) -> None:
    response = client.post("/api/dicom/instances", json={"patientID": "X", "patientAge": "1"})
    errors = response.get_json()["errors"]

    assert response.status_code == 400
    assert list(errors) == ["patientAge"]
    assert "Unknown field" in errors["patientAge"][0]


@pytest.mark.parametrize(
    ("data", "message"),
    [("{not json", "Not valid JSON"), ("[1, 2]", "not an array"), ("", "Missing JSON body")],
)
def test_create_rejects_bad_body(client: FlaskClient, data: str, message: str) -> None:
    response = client.post(
        "/api/dicom/instances", data=data, content_type="application/json"
    )
    errors = response.get_json()["errors"]["body"]

    assert response.status_code == 400
    assert any(message.lower() in text.lower() for text in errors)


def test_create_leaves_no_file_on_invalid_body(client: FlaskClient, app: Flask) -> None:
    client.post("/api/dicom/instances", json={"patientID": "X", "patientSex": "Q"})

    assert list(Path(app.config["DICOM_STORAGE_DIR"]).iterdir()) == []


def test_batch_reports_each_item(client: FlaskClient) -> None:
    items = [{"patientID": "A"}, {"patientID": "B", "patientSex": "Q"}, {"patientID": "C"}]

    response = client.post("/api/dicom/instances/batch", json=items)
    data = response.get_json()["data"]

    assert response.status_code == 201
    assert data["total"] == 3
    assert data["succeeded"] == 2
    assert data["failed"] == 1
    assert [result["success"] for result in data["results"]] == [True, False, True]
    assert data["results"][1]["errors"] == {"patientSex": ["Must be M, F or O (CS)."]}
    assert data["results"][1]["data"] is None


def test_batch_rejects_non_array(client: FlaskClient) -> None:
    response = client.post("/api/dicom/instances/batch", json={"patientID": "A"})

    assert response.status_code == 400
    assert "JSON array" in response.get_json()["errors"]["body"][0]


def test_list_with_paging(client: FlaskClient) -> None:
    names = [create(client, {"patientID": str(number)})["filename"] for number in range(3)]

    everything = client.get("/api/dicom/instances").get_json()["data"]
    page = client.get("/api/dicom/instances?limit=2&offset=1").get_json()["data"]

    assert everything["count"] == 3
    assert sorted(item["filename"] for item in everything["files"]) == sorted(names)
    assert page["count"] == 3
    assert len(page["files"]) == 2
    first = everything["files"][0]
    assert set(first) >= {"filename", "filepath", "size", "created", "modified"}
    assert first["size"] > 0
    assert first["modified"].endswith("Z")


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "offset=-1", "sort=name"])
def test_list_rejects_bad_query(client: FlaskClient, query: str) -> None:
    response = client.get(f"/api/dicom/instances?{query}")

    assert response.status_code == 400
    assert response.get_json()["errors"]


def test_stats_counts_files(client: FlaskClient) -> None:
    create(client, {"patientID": "A"})
    create(client, {"patientID": "B"})

    data = client.get("/api/dicom/instances/stats").get_json()["data"]

    assert data["count"] == 2
    assert data["totalSize"] > 0
    assert data["largestSize"] <= data["totalSize"]


def test_validate_reports_uids_and_dump(client: FlaskClient) -> None:
    filename = create(client, CONTRACT_EXAMPLE)["filename"]

    response = client.get(f"/api/dicom/instances/{filename}/validate")
    data = response.get_json()["data"]

    assert response.status_code == 200
    assert data["filename"] == filename
    assert data["hasStudyInstanceUID"] is True
    assert data["hasSeriesInstanceUID"] is True
    assert data["hasSOPInstanceUID"] is True
    assert data["missingTags"] == []
    assert "(0010,0020) LO [PID-0001]" in data["details"]
    assert isinstance(data["isValid"], bool)
    assert "iod" in data


def test_validate_reports_missing_uid(client: FlaskClient, app: Flask, tmp_path: Path) -> None:
    source = create(client, {"patientID": "X"})["filepath"]
    dataset = pydicom.dcmread(source)
    del dataset.SeriesInstanceUID
    broken = Path(app.config["DICOM_STORAGE_DIR"]) / "instance_1.dcm"
    dataset.save_as(broken)

    data = client.get("/api/dicom/instances/instance_1.dcm/validate").get_json()["data"]

    assert data["isValid"] is False
    assert data["hasSeriesInstanceUID"] is False
    assert data["hasStudyInstanceUID"] is True
    assert "SeriesInstanceUID" in data["missingTags"]


def test_dump_returns_dcmdump_text(client: FlaskClient) -> None:
    filename = create(client, {"patientID": "X"})["filename"]

    data = client.get(f"/api/dicom/instances/{filename}/dump").get_json()["data"]

    assert data["filename"] == filename
    assert "# Dicom-File-Format" in data["dump"]
    assert "(0008,0018) UI" in data["dump"]


def test_download_returns_the_file(client: FlaskClient) -> None:
    created = create(client, {"patientID": "X"})

    with client.get(f"/api/dicom/instances/{created['filename']}/download") as response:
        content = response.data

    assert response.status_code == 200
    assert response.mimetype == "application/dicom"
    assert content == Path(created["filepath"]).read_bytes()
    assert content[128:132] == b"DICM"


def test_delete_removes_the_file(client: FlaskClient) -> None:
    created = create(client, {"patientID": "X"})

    response = client.delete(f"/api/dicom/instances/{created['filename']}")
    second = client.delete(f"/api/dicom/instances/{created['filename']}")

    assert response.status_code == 200
    assert response.get_json()["message"] == "DICOM instance deleted successfully"
    assert response.get_json()["data"]["filename"] == created["filename"]
    assert not Path(created["filepath"]).exists()
    assert second.status_code == 404


@pytest.mark.parametrize(
    "route",
    ["/validate", "/dump", "/download"],
)
def test_unknown_filename_is_404(client: FlaskClient, route: str) -> None:
    response = client.get(f"/api/dicom/instances/instance_123.dcm{route}")

    assert response.status_code == 404
    assert response.get_json()["success"] is False
    assert "instance_123.dcm" in response.get_json()["message"]


@pytest.mark.parametrize(
    "filename",
    ["..%2F..%2Fetc%2Fpasswd", "..", "instance_1.dcm%00.txt", "%2Fetc%2Fpasswd",
     "instance_1.DCM", "other.dcm", "instance_..dcm"],
)  # fmt: skip
def test_traversal_filenames_are_rejected(client: FlaskClient, filename: str) -> None:
    for method, suffix in (("get", "/validate"), ("get", "/download"), ("delete", "")):
        response = getattr(client, method)(f"/api/dicom/instances/{filename}{suffix}")

        assert response.status_code in (400, 404)
        assert response.get_json()["success"] is False


def test_symlink_outside_is_not_served(client: FlaskClient, app: Flask, tmp_path: Path) -> None:
    outside = tmp_path / "secret.dcm"
    outside.write_bytes(b"secret")
    (Path(app.config["DICOM_STORAGE_DIR"]) / "instance_99.dcm").symlink_to(outside)

    download = client.get("/api/dicom/instances/instance_99.dcm/download")
    delete = client.delete("/api/dicom/instances/instance_99.dcm")

    assert download.status_code == 404
    assert delete.status_code == 404
    assert outside.exists()


def test_send_arrives_in_orthanc(
    client: FlaskClient, orthanc: LocalOrthanc, orthanc_api: requests.Session
) -> None:
    created = create(client, CONTRACT_EXAMPLE)

    response = client.post(f"/api/dicom/instances/{created['filename']}/send")
    envelope = response.get_json()
    data = envelope["data"]

    assert response.status_code == 200
    assert envelope["message"] == "DICOM instance sent to Orthanc successfully"
    assert data["filename"] == created["filename"]
    assert data["orthancHost"] == "127.0.0.1"
    assert data["orthancPort"] == orthanc.settings.dicom_port
    assert data["status"].startswith("0x0000")
    assert "Received Store Response" in data["output"]
    assert data["orthancId"]

    tags = orthanc_api.get(
        f"{orthanc.settings.url}/instances/{data['orthancId']}/simplified-tags", timeout=5
    ).json()
    assert tags["SOPInstanceUID"] == created["uids"]["sopInstanceUID"]
    assert tags["SeriesInstanceUID"] == created["uids"]["seriesInstanceUID"]
    assert tags["StudyInstanceUID"] == created["uids"]["studyInstanceUID"]
    assert tags["PatientID"] == "PID-0001"
    assert tags["PatientName"] == "Doe^Jane"
    assert tags["AccessionNumber"] == "ACC20250801"
    assert Path(created["filepath"]).exists()


def test_send_with_body_overrides(
    client: FlaskClient, orthanc_factory, orthanc_api: requests.Session
) -> None:
    other: LocalOrthanc = orthanc_factory(aet="OTHERPACS")
    created = create(client, {"patientID": "X"})

    response = client.post(
        f"/api/dicom/instances/{created['filename']}/send",
        json={"host": "127.0.0.1", "port": other.settings.dicom_port, "aet": "OTHERPACS",
              "sourceAet": "OVERRIDE"},
    )  # fmt: skip
    data = response.get_json()["data"]

    assert response.status_code == 200
    assert data["orthancPort"] == other.settings.dicom_port
    assert data["calledAet"] == "OTHERPACS"
    assert data["callingAet"] == "OVERRIDE"
    found = orthanc_api.post(
        f"{other.settings.url}/tools/lookup", data=created["uids"]["sopInstanceUID"], timeout=5
    ).json()
    assert [match["Type"] for match in found] == ["Instance"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"port": 0}, "port"), ({"port": "4242"}, "port"), ({"aet": "X" * 17}, "aet"),
     ({"host": "bad host"}, "host"), ({"sourceAet": ""}, "sourceAet"),
     ({"aet": "A\\B"}, "aet"), ({"timeout": 3}, "timeout")],
)  # fmt: skip
def test_send_rejects_invalid_body(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    created = create(client, {"patientID": "X"})

    response = client.post(f"/api/dicom/instances/{created['filename']}/send", json=body)

    assert response.status_code == 400
    assert list(response.get_json()["errors"]) == [field]


def test_send_to_stopped_orthanc_is_502(tmp_path: Path, orthanc_factory) -> None:
    server: LocalOrthanc = orthanc_factory()
    app = create_app(app_config(tmp_path, server, DCMTK_TIMEOUT=3))
    client = app.test_client()
    created = create(client, {"patientID": "X"})
    server.stop()

    response = client.post(f"/api/dicom/instances/{created['filename']}/send")
    envelope = response.get_json()

    assert response.status_code == 502
    assert envelope["success"] is False
    assert envelope["data"] is None
    assert "Association Request Failed" in envelope["message"]
    assert Path(created["filepath"]).exists()


def test_send_refused_by_called_aet_check(tmp_path: Path, orthanc_factory) -> None:
    server: LocalOrthanc = orthanc_factory(check_called_aet=True)
    app = create_app(app_config(tmp_path, server, ORTHANC_AET="WRONGAET"))
    client = app.test_client()
    created = create(client, {"patientID": "X"})

    response = client.post(f"/api/dicom/instances/{created['filename']}/send")
    message = response.get_json()["message"]

    assert response.status_code == 502
    assert "WRONGAET" in message
    assert "Association Rejected" in message or "rejected" in message.lower()
    assert Path(created["filepath"]).exists()


def test_send_refused_store_is_502(client: FlaskClient, app: Flask) -> None:
    source = create(client, {"patientID": "X"})["filepath"]
    dataset = pydicom.dcmread(source)
    del dataset.StudyInstanceUID
    dataset.save_as(Path(app.config["DICOM_STORAGE_DIR"]) / "instance_7.dcm")

    response = client.post("/api/dicom/instances/instance_7.dcm/send")
    message = response.get_json()["message"]

    assert response.status_code == 502
    assert "C-STORE status 0xA" in message or "C-STORE status 0xC" in message


def test_batch_send_over_one_association(
    client: FlaskClient, orthanc: LocalOrthanc, orthanc_api: requests.Session
) -> None:
    created = [create(client, {"patientID": f"B{number}"}) for number in range(3)]

    response = client.post(
        "/api/dicom/instances/send", json={"filenames": [item["filename"] for item in created]}
    )
    data = response.get_json()["data"]

    assert response.status_code == 200
    assert data["total"] == 3
    assert data["succeeded"] == 3
    assert data["output"].count("Requesting Association") == 1
    for item in created:
        found = orthanc_api.post(
            f"{orthanc.settings.url}/tools/lookup", data=item["uids"]["sopInstanceUID"], timeout=5
        ).json()
        assert len(found) == 1


def test_sample_defaults_and_overrides(client: FlaskClient) -> None:
    default = client.post("/api/dicom/instances/sample")
    custom = client.post(
        "/api/dicom/instances/sample", json={"patientID": "S-1", "modality": "OT"}
    )

    assert default.status_code == 201
    assert pydicom.dcmread(default.get_json()["data"]["filepath"]).PatientID == "123456"
    assert custom.status_code == 201
    dataset = pydicom.dcmread(custom.get_json()["data"]["filepath"])
    assert dataset.PatientID == "S-1"
    assert dataset.Modality == "OT"


def test_sample_rejects_unknown_override(client: FlaskClient) -> None:
    response = client.post("/api/dicom/instances/sample", json={"accessionNumber": "A"})

    assert response.status_code == 400
    assert "accessionNumber" in response.get_json()["errors"]


def test_tools_status_lists_versions(client: FlaskClient) -> None:
    data = client.get("/api/dicom/tools-status").get_json()["data"]

    for tool in ("dump2dcm", "dcmdump", "storescu", "echoscu"):
        assert "3.6" in data[tool], data[tool]


def test_tools_status_reports_missing(client: FlaskClient, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    data = client.get("/api/dicom/tools-status").get_json()["data"]

    assert "not found" in data["dump2dcm"]


def test_create_without_dump2dcm_is_503(client: FlaskClient, monkeypatch, tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dcmdump", "storescu", "echoscu"):
        (tools / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(tools))

    response = client.post("/api/dicom/instances", json={"patientID": "X"})

    assert response.status_code == 503
    assert "dump2dcm" in response.get_json()["message"]


def test_modalities_lists_table(client: FlaskClient) -> None:
    data = client.get("/api/dicom/modalities").get_json()["data"]
    by_code = {item["modality"]: item for item in data}

    assert by_code["CR"]["sopClassUID"] == "1.2.840.10008.5.1.4.1.1.1"
    assert by_code["OT"]["sopClassUID"] == "1.2.840.10008.5.1.4.1.1.7"


def test_workflow_command_runs(tmp_path: Path, orthanc: LocalOrthanc, monkeypatch, capsys) -> None:
    from app import workflow

    for key, value in app_config(tmp_path, orthanc).items():
        monkeypatch.setenv(key, str(value))

    status = workflow.main([])
    output = capsys.readouterr().out

    assert "Create: DICOM instance created successfully" in output
    assert "(0010,0020) LO [123456]" in output
    assert "C-STORE status: 0x0000" in output
    assert status in (0, 1)


def test_batch_send_goes_on_after_bad_file(
    client: FlaskClient, app: Flask, orthanc: LocalOrthanc, orthanc_api: requests.Session
) -> None:
    good = [create(client, {"patientID": f"G{number}"}) for number in range(2)]
    dataset = pydicom.dcmread(good[0]["filepath"])
    del dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPClassUID = ""
    dataset.save_as(Path(app.config["DICOM_STORAGE_DIR"]) / "instance_3.dcm")
    names = ["instance_3.dcm", good[0]["filename"], good[1]["filename"]]

    response = client.post("/api/dicom/instances/send", json={"filenames": names})
    envelope = response.get_json()

    assert response.status_code == 502
    assert list(envelope["errors"]) == ["instance_3.dcm"]
    assert "not sent" in envelope["errors"]["instance_3.dcm"][0]
    assert "stored 2 of 3" in envelope["message"]
    for item in good:
        found = orthanc_api.post(
            f"{orthanc.settings.url}/tools/lookup", data=item["uids"]["sopInstanceUID"], timeout=5
        ).json()
        assert len(found) == 1


def test_send_output_has_no_debug_lines(client: FlaskClient) -> None:
    created = create(client, {"patientID": "X"})

    output = client.post(f"/api/dicom/instances/{created['filename']}/send").get_json()[
        "data"
    ]["output"]

    assert "Received Store Response" in output
    assert not any(line.startswith("D:") for line in output.splitlines())


@pytest.mark.parametrize(("value", "stored"), [("=", ""), ("Doe^Jane=", "Doe^Jane"), ("A==", "A")])
def test_trailing_empty_name_groups_dropped(client: FlaskClient, value: str, stored: str) -> None:
    data = create(client, {"patientID": "X", "patientName": value})

    assert str(pydicom.dcmread(data["filepath"]).PatientName) == stored
