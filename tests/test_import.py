"""Tests of import and repair, and of instances built from a JPEG, PNG or PDF.

Broken files are made here with pydicom. Repaired files are sent to the real
Orthanc of the session and looked up through its REST API.
"""

from __future__ import annotations

import base64
import io
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from app import create_app
from app.local_orthanc import LocalOrthanc, free_port

from .support import app_config

# An 8 x 8 colour baseline JPEG, written once by DCMTK's dcmj2pnm (+oj).
TINY_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e121110"
    "1318281a181616183123251d283a333d3c3933383740485c4e404457453738506d51575f6267"
    "68673e4d71797064785c656763ffdb0043011112121815182f1a1a2f63423842636363636363"
    "6363636363636363636363636363636363636363636363636363636363636363636363636363"
    "636363636363ffc00011080008000803012100021101031101ffc40015000101000000000000"
    "00000000000000000001ffc4001f100001020603000000000000000000000004000201031323"
    "325181a1c1ffc4001501010100000000000000000000000000000001ffc40015110101000000"
    "00000000000000000000000001ffda000c03010002110311003f009003194385a756184eae3b"
    "ce51583fffd9"
)

# The smallest PDF that viewers open: one empty page.
TINY_PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)

IMPORT_URL = "/api/dicom/instances/import"
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def image_dataset(**changes: Any) -> Dataset:
    """Return a small Secondary Capture dataset with ``changes`` applied.

    A change to ``None`` removes the element.
    """
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = "20250801"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC-IMPORT-1"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Manufacturer = "test"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Scanned forms"

    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-IMPORT"
    ds.PatientBirthDate = "19800517"
    ds.PatientSex = "F"

    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(0, 256, 16))

    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Encode ``ds`` as a Part 10 file with meta information for ``syntax``."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    buffer = io.BytesIO()
    if "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(buffer, enforce_file_format=True)
    else:
        # pydicom writes meta information without the instance UID only
        # with enforce_file_format=False.
        ds.preamble = b"\0" * 128
        ds.file_meta.FileMetaInformationVersion = b"\0\1"
        ds.save_as(buffer, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
    return buffer.getvalue()


def bare_dataset(ds: Dataset) -> bytes:
    """Encode ``ds`` without preamble or meta information, explicit VR little endian."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def wrong_syntax_file(ds: Dataset) -> bytes:
    """Return an implicit VR dataset behind meta information that names explicit VR."""
    explicit = part10(ds.copy(), ExplicitVRLittleEndian)
    implicit = part10(ds.copy(), ImplicitVRLittleEndian)
    return explicit[: _meta_end(explicit)] + implicit[_meta_end(implicit) :]


def _meta_end(data: bytes) -> int:
    group_length = struct.unpack_from("<I", data, 140)[0]
    return 144 + group_length


def tiny_png() -> bytes:
    """Return a 3 x 2 RGB PNG written by hand: chunks, CRCs, zlib data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0)
    rows = b"\x00" + bytes([255, 0, 0, 0, 255, 0, 0, 0, 255]) + b"\x01" + bytes([10, 20, 30] * 3)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def upload(client: FlaskClient, data: bytes, query: str = "") -> Any:
    return client.post(
        f"{IMPORT_URL}{query}", data=data, headers={"Content-Type": "application/dicom"}
    )


def upload_many(client: FlaskClient, files: dict[str, bytes], query: str = "") -> Any:
    form = {"files": [(io.BytesIO(data), name) for name, data in files.items()]}
    return client.post(f"{IMPORT_URL}{query}", data=form, content_type="multipart/form-data")


def orthanc_lookup(api: requests.Session, orthanc: LocalOrthanc, uid: str) -> list[dict[str, Any]]:
    response = api.post(f"{orthanc.settings.url}/tools/lookup", data=uid, timeout=10)
    response.raise_for_status()
    matches: list[dict[str, Any]] = response.json()
    return matches


def dciodvfy_errors(path: Path) -> list[str]:
    completed = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    output = completed.stdout + completed.stderr
    return [line for line in output.splitlines() if line.startswith("Error")]


def test_import_rejects_non_dicom(client: FlaskClient) -> None:
    response = upload(client, b"This is a plain text file, not DICOM. " * 4)
    body = response.get_json()

    assert response.status_code == 400
    assert body["success"] is False
    assert "not a DICOM file" in body["errors"]["request body"][0]
    assert client.get("/api/dicom/instances").get_json()["data"]["count"] == 0


def test_import_rejects_truncated_file(client: FlaskClient) -> None:
    data = part10(image_dataset())

    response = upload(client, data[:-6])
    body = response.get_json()

    assert response.status_code == 400
    message = body["errors"]["request body"][0]
    assert "truncated or damaged" in message
    assert "premature end of stream" in message or "remaining bytes" in message
    assert client.get("/api/dicom/instances").get_json()["data"]["count"] == 0


def test_import_without_repair_reports_problems(client: FlaskClient) -> None:
    response = upload(client, part10(image_dataset(StudyInstanceUID=None, StudyID=None)))
    result = response.get_json()["data"]["results"][0]

    assert response.status_code == 201
    assert result["accepted"] is True
    assert result["repaired"] is False
    assert result["filename"].startswith("instance_")
    assert "StudyInstanceUID (type 1) is missing or empty." in result["problemsFound"]
    assert "StudyID (type 2) is missing." in result["problemsFound"]
    assert result["complete"] is False
    assert result["changes"] == []


def test_repair_fixes_orthanc_rejection(
    client: FlaskClient, orthanc: LocalOrthanc, orthanc_api: requests.Session
) -> None:
    data = part10(image_dataset(StudyInstanceUID=None))

    stored = upload(client, data).get_json()["data"]["results"][0]
    plain_send = client.post(f"/api/dicom/instances/{stored['filename']}/send")

    assert plain_send.status_code == 502
    assert plain_send.get_json()["success"] is False

    response = upload(client, data, "?repair=true&send=true")
    body = response.get_json()
    result = body["data"]["results"][0]

    assert response.status_code == 201, body
    assert result["repaired"] is True
    assert result["remainingProblems"] == []
    assert result["send"]["success"] is True
    matches = orthanc_lookup(orthanc_api, orthanc, result["uids"]["sopInstanceUID"])
    assert [match["Type"] for match in matches] == ["Instance"]


BROKEN_FILES = {
    "no UIDs": lambda: part10(
        image_dataset(StudyInstanceUID=None, SeriesInstanceUID=None, SOPInstanceUID=None)
    ),
    "no series UID": lambda: part10(image_dataset(SeriesInstanceUID=None)),
    "no meta information": lambda: bare_dataset(image_dataset(PatientSex=None)),
    "wrong transfer syntax": lambda: wrong_syntax_file(image_dataset()),
}


@pytest.mark.parametrize("case", BROKEN_FILES)
def test_repaired_file_stored_by_orthanc(
    case: str,
    client: FlaskClient,
    orthanc: LocalOrthanc,
    orthanc_api: requests.Session,
) -> None:
    response = upload(client, BROKEN_FILES[case](), "?repair=true&send=true")
    body = response.get_json()
    result = body["data"]["results"][0]

    assert response.status_code == 201, body
    assert result["problemsFound"], "the broken file should have problems"
    assert result["repaired"] is True
    assert result["remainingProblems"] == []
    assert result["send"]["success"] is True
    matches = orthanc_lookup(orthanc_api, orthanc, result["uids"]["sopInstanceUID"])
    assert [match["Type"] for match in matches] == ["Instance"]

    stored = dcmread(result["filepath"])
    assert stored.file_meta.MediaStorageSOPInstanceUID == stored.SOPInstanceUID
    assert stored.file_meta.MediaStorageSOPClassUID == stored.SOPClassUID


def test_wrong_transfer_syntax_is_corrected(client: FlaskClient) -> None:
    response = upload(client, wrong_syntax_file(image_dataset()), "?repair=true")
    result = response.get_json()["data"]["results"][0]

    assert any("TransferSyntaxUID (0002,0010)" in problem for problem in result["problemsFound"])
    assert result["transferSyntaxUID"] == ImplicitVRLittleEndian
    change = next(item for item in result["changes"] if item["keyword"] == "TransferSyntaxUID")
    assert change["originalValue"] == ExplicitVRLittleEndian
    assert change["recordedInOriginalAttributesSequence"] is False


def test_repair_writes_audit_trail(client: FlaskClient) -> None:
    data = part10(image_dataset(StudyInstanceUID=None, SOPInstanceUID=None))

    response = upload(client, data, "?repair=true&reason=COERCE&source=Other%20Hospital")
    result = response.get_json()["data"]["results"][0]
    stored = dcmread(result["filepath"])
    audit = stored.OriginalAttributesSequence[0]
    previous = audit.ModifiedAttributesSequence[0]

    audited = {
        change["keyword"]
        for change in result["changes"]
        if change["recordedInOriginalAttributesSequence"]
    }
    assert audited == {"StudyInstanceUID", "SOPInstanceUID"}
    assert "MediaStorageSOPInstanceUID" in {change["keyword"] for change in result["changes"]}
    assert previous.StudyInstanceUID == ""
    assert previous.SOPInstanceUID == ""
    assert audit.ReasonForTheAttributeModification == "COERCE"
    assert audit.SourceOfPreviousValues == "Other Hospital"
    assert audit.ModifyingSystem.startswith("dicom-service")
    assert len(audit.AttributeModificationDateTime) >= 14
    assert stored.StudyInstanceUID == result["uids"]["studyInstanceUID"]


def test_multi_file_upload_one_study(
    client: FlaskClient, orthanc: LocalOrthanc, orthanc_api: requests.Session
) -> None:
    files = {
        f"form-{series}-{number}.dcm": part10(
            image_dataset(
                StudyInstanceUID=None,
                SeriesInstanceUID=None,
                SOPInstanceUID=None,
                AccessionNumber="ACC-MULTI",
                SeriesNumber=series,
                InstanceNumber=number,
            )
        )
        for series in (1, 2)
        for number in (1, 2, 3)
    }

    response = upload_many(client, files, "?repair=true&send=true")
    body = response.get_json()
    results = body["data"]["results"]

    assert response.status_code == 201, body
    assert body["data"]["accepted"] == 6
    assert len({result["uids"]["studyInstanceUID"] for result in results}) == 1
    assert len({result["uids"]["seriesInstanceUID"] for result in results}) == 2
    assert len({result["uids"]["sopInstanceUID"] for result in results}) == 6

    study_uid = results[0]["uids"]["studyInstanceUID"]
    matches = orthanc_lookup(orthanc_api, orthanc, study_uid)
    assert [match["Type"] for match in matches] == ["Study"]
    study = orthanc_api.get(f"{orthanc.settings.url}/studies/{matches[0]['ID']}", timeout=10).json()
    assert len(study["Series"]) == 2


def test_repeat_upload_reuses_generated_uids(client: FlaskClient) -> None:
    first_file = part10(image_dataset(StudyInstanceUID=None, SeriesInstanceUID=None, SOPInstanceUID=None))
    second_file = part10(
        image_dataset(StudyInstanceUID=None, SeriesInstanceUID=None, SOPInstanceUID=None, InstanceNumber=2)
    )

    first = upload(client, first_file, "?repair=true").get_json()["data"]["results"][0]
    again = upload(client, first_file, "?repair=true").get_json()["data"]["results"][0]
    other = upload(client, second_file, "?repair=true").get_json()["data"]["results"][0]

    assert again["uids"] == first["uids"]
    assert other["uids"]["studyInstanceUID"] == first["uids"]["studyInstanceUID"]
    assert other["uids"]["seriesInstanceUID"] == first["uids"]["seriesInstanceUID"]
    assert other["uids"]["sopInstanceUID"] != first["uids"]["sopInstanceUID"]


def test_upload_joins_existing_study_uid(client: FlaskClient) -> None:
    study_uid = generate_uid()
    files = {
        "with-uid.dcm": part10(image_dataset(StudyInstanceUID=study_uid, AccessionNumber="ACC-JOIN")),
        "without-uid.dcm": part10(image_dataset(StudyInstanceUID=None, AccessionNumber="ACC-JOIN")),
    }

    results = upload_many(client, files, "?repair=true").get_json()["data"]["results"]

    assert [result["uids"]["studyInstanceUID"] for result in results] == [study_uid, study_uid]


def test_mixed_upload_stores_good_files(client: FlaskClient) -> None:
    files = {"good.dcm": part10(image_dataset()), "notes.txt": b"not a DICOM file at all " * 3}

    response = upload_many(client, files)
    data = response.get_json()["data"]

    assert response.status_code == 201
    assert data["accepted"] == 1
    assert data["rejected"] == 1
    assert data["results"][1]["accepted"] is False
    assert "not a DICOM file" in data["results"][1]["message"]


def test_import_repair_from_configuration(tmp_path: Path, orthanc: LocalOrthanc) -> None:
    app = create_app(app_config(tmp_path, orthanc, IMPORT_REPAIR=True))
    client = app.test_client()

    repaired = upload(client, part10(image_dataset(SeriesInstanceUID=None)))
    unchanged = upload(client, part10(image_dataset(SeriesInstanceUID=None)), "?repair=false")

    assert repaired.get_json()["data"]["results"][0]["repaired"] is True
    assert unchanged.get_json()["data"]["results"][0]["repaired"] is False


@pytest.mark.parametrize(
    ("content_type", "message"),
    [("text/plain", "Unsupported Content-Type"), ("multipart/form-data", "No file was uploaded")],
)
def test_import_without_file_is_rejected(client: FlaskClient, content_type: str, message: str) -> None:
    response = client.post(IMPORT_URL, data={} if "multipart" in content_type else "x",
                           content_type=content_type)

    assert response.status_code == 400
    assert message in response.get_json()["message"]


def test_jpeg_becomes_secondary_capture(
    client: FlaskClient, orthanc: LocalOrthanc, orthanc_api: requests.Session
) -> None:
    body = {
        "patientID": "PID-JPEG",
        "patientName": "Müller^Jürgen",
        "studyDescription": "Request form",
        "image": base64.b64encode(TINY_JPEG).decode(),
    }

    response = client.post("/api/dicom/instances", json=body)
    data = response.get_json()["data"]

    assert response.status_code == 201, response.get_json()
    assert data["sopClassUID"] == SecondaryCaptureImageStorage
    path = Path(data["filepath"])
    assert dciodvfy_errors(path) == []
    stored = dcmread(path)
    assert stored.PatientName == "Müller^Jürgen"
    assert stored.SOPInstanceUID == data["uids"]["sopInstanceUID"]

    sent = client.post(f"/api/dicom/instances/{data['filename']}/send")
    assert sent.status_code == 200, sent.get_json()
    orthanc_id = sent.get_json()["data"]["orthancId"]
    file = orthanc_api.get(f"{orthanc.settings.url}/instances/{orthanc_id}/file", timeout=10)
    assert dcmread(io.BytesIO(file.content)).SOPInstanceUID == data["uids"]["sopInstanceUID"]


def test_png_becomes_photographic_image(client: FlaskClient) -> None:
    form = {
        "patientID": "PID-PNG",
        "modality": "XC",
        "seriesNumber": "3",
        "image": (io.BytesIO(tiny_png()), "photo.png"),
    }

    response = client.post("/api/dicom/instances", data=form, content_type="multipart/form-data")
    data = response.get_json()["data"]

    assert response.status_code == 201, response.get_json()
    assert data["sopClassUID"] == "1.2.840.10008.5.1.4.1.1.77.1.4"
    stored = dcmread(data["filepath"])
    assert (stored.Rows, stored.Columns) == (2, 3)
    assert stored.SeriesNumber == 3
    assert stored.PixelData[:3] == bytes([255, 0, 0])
    assert dciodvfy_errors(Path(data["filepath"])) == []


def test_pdf_joins_existing_study(
    client: FlaskClient, orthanc: LocalOrthanc, orthanc_api: requests.Session
) -> None:
    image = client.post(
        "/api/dicom/instances",
        json={"patientID": "PID-PDF", "image": base64.b64encode(TINY_JPEG).decode()},
    ).get_json()["data"]
    study_uid = image["uids"]["studyInstanceUID"]
    body = {
        "patientID": "PID-PDF",
        "studyInstanceUID": study_uid,
        "documentTitle": "Radiology report",
        "pdf": base64.b64encode(TINY_PDF).decode(),
    }

    response = client.post("/api/dicom/instances", json=body)
    data = response.get_json()["data"]

    assert response.status_code == 201, response.get_json()
    assert data["uids"]["studyInstanceUID"] == study_uid
    assert dciodvfy_errors(Path(data["filepath"])) == []
    stored = dcmread(data["filepath"])
    assert stored.EncapsulatedDocument.startswith(b"%PDF-")
    assert stored.DocumentTitle == "Radiology report"

    sent = client.post("/api/dicom/instances/send", json={"filenames": [image["filename"], data["filename"]]})
    assert sent.status_code == 200, sent.get_json()
    matches = orthanc_lookup(orthanc_api, orthanc, study_uid)
    study = orthanc_api.get(f"{orthanc.settings.url}/studies/{matches[0]['ID']}", timeout=10).json()
    assert len(study["Series"]) == 2


@pytest.mark.parametrize(
    ("field", "content", "message"),
    [
        ("image", b"GIF89a not supported", "Must be a JPEG or PNG image"),
        ("pdf", b"not a pdf", "Must be a PDF document"),
        ("image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "PNG"),
    ],
)
def test_content_of_wrong_type_is_rejected(
    client: FlaskClient, field: str, content: bytes, message: str
) -> None:
    body = {"patientID": "PID-BAD", field: base64.b64encode(content).decode()}

    response = client.post("/api/dicom/instances", json=body)
    errors = response.get_json()["errors"]

    assert response.status_code == 400
    assert message in errors[field][0]


def test_content_must_be_base64(client: FlaskClient) -> None:
    response = client.post("/api/dicom/instances", json={"patientID": "P", "pdf": "%%%"})

    assert response.status_code == 400
    assert "base64" in response.get_json()["errors"]["pdf"][0]


def test_undated_files_merge_within_upload(client: FlaskClient) -> None:
    def undated() -> bytes:
        return part10(
            image_dataset(
                StudyInstanceUID=None, SeriesInstanceUID=None, AccessionNumber="", StudyDate=None
            )
        )

    together = upload_many(client, {"a.dcm": undated(), "b.dcm": undated()}, "?repair=true")
    later = upload(client, undated(), "?repair=true")
    first_results = together.get_json()["data"]["results"]
    later_study = later.get_json()["data"]["results"][0]["uids"]["studyInstanceUID"]

    assert first_results[0]["uids"]["studyInstanceUID"] == first_results[1]["uids"]["studyInstanceUID"]
    assert later_study != first_results[0]["uids"]["studyInstanceUID"]


def test_study_key_without_accession(client: FlaskClient) -> None:
    def file(description: str) -> bytes:
        return part10(
            image_dataset(StudyInstanceUID=None, AccessionNumber="", StudyDescription=description)
        )

    results = upload_many(
        client, {"a.dcm": file("Forms"), "b.dcm": file("Forms"), "c.dcm": file("Photos")}, "?repair=true"
    ).get_json()["data"]["results"]
    studies = [result["uids"]["studyInstanceUID"] for result in results]

    assert studies[0] == studies[1]
    assert studies[2] != studies[0]


def test_sop_class_uid_restored_from_meta(client: FlaskClient) -> None:
    ds = image_dataset()
    data = part10(ds)
    ds_without_class = dcmread(io.BytesIO(data))
    del ds_without_class.SOPClassUID
    buffer = io.BytesIO()
    ds_without_class.save_as(buffer)

    result = upload(client, buffer.getvalue(), "?repair=true").get_json()["data"]["results"][0]

    assert "SOPClassUID (type 1) is missing or empty." in result["problemsFound"]
    assert result["sopClassUID"] == SecondaryCaptureImageStorage
    assert result["remainingProblems"] == []


def test_uid_map_concurrent_lookups(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from app.uidmap import UidMap

    uid_map = UidMap(tmp_path)

    def lookup(index: int) -> str:
        return uid_map.uid_for("study", ("accession", "P", "A"), lambda: f"1.2.3.{index}")[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        uids = set(pool.map(lookup, range(32)))

    assert len(uids) == 1


def test_image_keeps_requested_laterality(client: FlaskClient) -> None:
    body = {
        "patientID": "PID-SIDE",
        "modality": "XC",
        "laterality": "L",
        "image": base64.b64encode(TINY_JPEG).decode(),
    }

    response = client.post("/api/dicom/instances", json=body)
    data = response.get_json()["data"]

    assert response.status_code == 201, response.get_json()
    assert dcmread(data["filepath"]).Laterality == "L"
    assert dciodvfy_errors(Path(data["filepath"])) == []


def test_placeholder_sop_class_is_not_restored(client: FlaskClient) -> None:
    dataset = image_dataset()
    data = part10(dataset)
    dataset = dcmread(io.BytesIO(data))
    del dataset.SOPClassUID
    # DCMTK writes this placeholder into the meta information of a dataset
    # without SOP Class UID.
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)

    response = upload(client, buffer.getvalue(), "?repair=true")
    result = response.get_json()["data"]["results"][0]

    assert [change["keyword"] for change in result["changes"]].count("SOPClassUID") == 0
    assert result["complete"] is False
    assert any("SOPClassUID" in problem for problem in result["remainingProblems"])


def test_wrong_syntax_file_dump_validate_send(client: FlaskClient) -> None:
    imported = upload(client, wrong_syntax_file(image_dataset()), "?repair=false")
    assert imported.status_code == 201, imported.get_json()
    filename = imported.get_json()["data"]["results"][0]["filename"]

    dumped = client.get(f"/api/dicom/instances/{filename}/dump")
    validated = client.get(f"/api/dicom/instances/{filename}/validate")
    sent = client.post(f"/api/dicom/instances/{filename}/send")

    assert dumped.status_code == 200, dumped.get_json()
    assert "# Used TransferSyntax: Little Endian Implicit" in dumped.get_json()["data"]["dump"]
    assert validated.status_code == 200, validated.get_json()
    report = validated.get_json()["data"]
    assert report["isValid"] is False
    assert [error["keyword"] for error in report["valueErrors"]] == ["TransferSyntaxUID"]
    assert report["problems"][0].startswith(
        "TransferSyntaxUID (0002,0010) is 1.2.840.10008.1.2.1 (Explicit VR Little "
        "Endian), but the dataset is encoded in 1.2.840.10008.1.2 (Implicit VR Little "
        "Endian)."
    )
    assert sent.status_code == 502, sent.get_json()
    assert sent.get_json()["success"] is False


@pytest.mark.parametrize(
    ("field", "content", "reason"),
    [
        ("image", b"\xff\xd8\xff" + b"not JPEG data" * 4, "Premature EOF in JPEG file"),
        ("pdf", b"%PDF-" + b"\x00not a PDF", "unable to decode PDF version number"),
    ],
    ids=["jpeg", "pdf"],
)
def test_damaged_content_names_reason(
    client: FlaskClient, field: str, content: bytes, reason: str
) -> None:
    body = {"patientID": "PID-BAD", field: base64.b64encode(content).decode()}

    response = client.post("/api/dicom/instances", json=body)
    errors = response.get_json()["errors"]

    assert response.status_code == 400
    assert "could not be converted to DICOM" in errors[field][0]
    assert reason in errors[field][0]
    assert ".tmp-" not in errors[field][0]
    assert client.get("/api/dicom/instances").get_json()["data"]["count"] == 0


@pytest.mark.parametrize(
    ("field", "content", "tool"),
    [("image", TINY_JPEG, "img2dcm"), ("pdf", TINY_PDF, "pdf2dcm")],
    ids=["jpeg", "pdf"],
)
def test_content_without_converter_is_503(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    field: str, content: bytes, tool: str,
) -> None:  # fmt: skip
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("dump2dcm", "dcmdump", "storescu", "echoscu"):
        (tools / name).symlink_to(shutil.which(name))
    monkeypatch.setenv("PATH", str(tools))
    body = {"patientID": "PID-TOOL", field: base64.b64encode(content).decode()}

    response = client.post("/api/dicom/instances", json=body)

    assert response.status_code == 503
    assert tool in response.get_json()["message"]


def test_rejected_same_names_keyed_by_position(client: FlaskClient) -> None:
    form = {
        "files": [
            (io.BytesIO(b""), "scan.dcm"),
            (io.BytesIO(b"not a DICOM file " * 8), "scan.dcm"),
            (io.BytesIO(b"also not DICOM " * 8), "scan.dcm"),
        ]
    }

    response = client.post(IMPORT_URL, data=form, content_type="multipart/form-data")
    errors = response.get_json()["errors"]

    assert response.status_code == 400
    assert list(errors) == ["scan.dcm", "scan.dcm (upload 2)", "scan.dcm (upload 3)"]
    assert "is empty" in errors["scan.dcm"][0]
    assert "not a DICOM file" in errors["scan.dcm (upload 2)"][0]


def test_send_failure_lists_stored_files(tmp_path: Path, orthanc: LocalOrthanc) -> None:
    # Nothing listens on the port that free_port returns.
    app = create_app(
        app_config(tmp_path, orthanc, ORTHANC_DICOM_PORT=free_port(), DCMTK_TIMEOUT=3)
    )
    client = app.test_client()

    files = {"a.dcm": part10(image_dataset()), "b.dcm": part10(image_dataset())}

    response = upload_many(client, files, "?send=true")
    body = response.get_json()
    listed = client.get("/api/dicom/instances").get_json()["data"]["files"]
    stored = sorted(item["filename"] for item in listed)

    assert response.status_code == 502
    assert body["data"] is None
    assert len(stored) == 2
    assert sorted(body["errors"]) == stored
    for filename in stored:
        assert filename in body["message"]
        assert f"/api/dicom/instances/{filename}/send" in body["errors"][filename][0]
    assert "Connection refused" in body["message"]


def test_non_ascii_source_converts_charset(client: FlaskClient) -> None:
    dataset = image_dataset(StudyInstanceUID=None)
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.PatientName = "Müller^Jürgen"

    # The source is "Hôpital Łódź", percent-encoded as UTF-8.
    query = "?repair=true&source=H%C3%B4pital%20%C5%81%C3%B3d%C5%BA"

    response = upload(client, part10(dataset), query)
    body = response.get_json()
    result = body["data"]["results"][0]
    stored = dcmread(result["filepath"])
    changes = {change["keyword"]: change for change in result["changes"]}
    change = changes["SpecificCharacterSet"]

    assert response.status_code == 201, body
    # "Łódź" is not in ISO 8859-1, so the file must change its character set.
    assert stored.SpecificCharacterSet == "ISO_IR 192"
    assert stored.PatientName == "Müller^Jürgen"
    assert stored.OriginalAttributesSequence[-1].SourceOfPreviousValues == "Hôpital Łódź"
    assert change["originalValue"] == "ISO_IR 100"
    assert change["recordedInOriginalAttributesSequence"] is False
    assert "SourceOfPreviousValues" in change["reason"]


def test_ascii_source_keeps_charset(client: FlaskClient) -> None:
    data = part10(image_dataset(StudyInstanceUID=None))

    response = upload(client, data, "?repair=true&source=North")
    result = response.get_json()["data"]["results"][0]
    keywords = {change["keyword"] for change in result["changes"]}

    assert response.status_code == 201
    assert "SpecificCharacterSet" not in keywords
    assert "SpecificCharacterSet" not in dcmread(result["filepath"])


def test_non_ascii_source_undeclared_text_rejected(client: FlaskClient) -> None:
    # A Latin-1 byte in a file without Specific Character Set: the file does
    # not say how to decode it, so it cannot be converted to UTF-8.
    data = part10(image_dataset(StudyInstanceUID=None, PatientName="Mxller"))
    data = data.replace(b"Mxller", b"M\xfcller")

    response = upload(client, data, "?repair=true&source=H%C3%B4pital")
    message = response.get_json()["errors"]["request body"][0]

    assert response.status_code == 400
    assert message.startswith("Repair of request body failed, so it was not stored: ")
    assert "could not convert it" in message
    assert ".tmp-" not in message
    assert client.get("/api/dicom/instances").get_json()["data"]["count"] == 0


def test_deep_nesting_rejected_on_import(client: FlaskClient) -> None:
    depth = 300
    sequence = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    dataset = image_dataset()
    del dataset.PixelData
    data = part10(dataset) + (sequence + item) * depth + (item_end + sequence_end) * depth

    response = upload(client, data, "?repair=false")
    body = response.get_json()

    assert response.status_code == 400, body
    assert body["errors"]["request body"] == [
        (
            "request body has sequences nested more deeply than the service can read "
            "(pydicom reached Python's recursion limit), so it was not stored."
        )
    ]
