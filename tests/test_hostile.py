"""Hostile-input tests: odd bodies, damaged content, races and peer faults.

Each test pins down one defect that hostile input once caused. The races with
DELETE are made deterministic: the test deletes the file at the step where a
concurrent DELETE request can land.
"""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path
from typing import Any

import pydicom
import pytest
from flask.testing import FlaskClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from app import create_app, dcmtk, validation
from app.local_orthanc import LocalOrthanc, free_port
from app.storage import FileStore

from .support import CONTRACT_EXAMPLE, app_config

IMPORT_URL = "/api/dicom/instances/import"
WORKLIST = {"patientId": "PID-HOSTILE", "patientName": "Doe^Jane"}


def small_dataset(**changes: Any) -> Dataset:
    """Return a Secondary Capture dataset with the UIDs and patient set."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PID-HOSTILE"
    ds.PatientName = "Doe^Jane"
    ds.Modality = "OT"
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset, syntax: str) -> bytes:
    """Encode ``ds`` as a Part 10 file in ``syntax``."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def wrong_syntax_file() -> bytes:
    """Return an implicit VR dataset behind meta information that names explicit VR."""
    ds = small_dataset()
    explicit = part10(ds.copy(), ExplicitVRLittleEndian)
    implicit = part10(ds.copy(), ImplicitVRLittleEndian)
    return explicit[: meta_end(explicit)] + implicit[meta_end(implicit) :]


def meta_end(data: bytes) -> int:
    """Return the offset after group 0002, from FileMetaInformationGroupLength."""
    group_length: int = struct.unpack_from("<I", data, 140)[0]
    return 144 + group_length


def nested_sequence_file(depth: int) -> bytes:
    """Return a Part 10 file ending in ``depth`` nested Content Sequences.

    Each sequence and item has undefined length, so a reader must descend
    through every level to find the end of the dataset.
    """
    head = part10(small_dataset(), ExplicitVRLittleEndian)
    sequence = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return head + (sequence + item) * depth + (item_end + sequence_end) * depth


def import_file(client: FlaskClient, data: bytes, query: str = "") -> Any:
    return client.post(
        f"{IMPORT_URL}{query}", data=data, headers={"Content-Type": "application/dicom"}
    )


def create_instance(client: FlaskClient) -> Path:
    response = client.post("/api/dicom/instances", json=CONTRACT_EXAMPLE)
    assert response.status_code == 201, response.get_json()
    return Path(response.get_json()["data"]["filepath"])


def create_worklist(client: FlaskClient) -> Path:
    response = client.post("/api/orthanc/worklists", json=WORKLIST)
    assert response.status_code == 201, response.get_json()
    return Path(response.get_json()["data"]["filepath"])


def assert_failure_envelope(body: dict[str, Any]) -> None:
    assert body["success"] is False
    assert body["data"] is None


# --- Imported files -----------------------------------------------------------------


def test_dump_of_wrong_syntax_import(client: FlaskClient) -> None:
    # Import without repair stores the file as it came, so dump must read
    # it the way the import check did (detecting the transfer syntax).
    imported = import_file(client, wrong_syntax_file(), "?repair=false")
    assert imported.status_code == 201, imported.get_json()
    filename = imported.get_json()["data"]["results"][0]["filename"]

    response = client.get(f"/api/dicom/instances/{filename}/dump")

    assert response.status_code == 200, response.get_json()
    assert "PID-HOSTILE" in response.get_json()["data"]["dump"]


def test_import_send_failure_names_file(tmp_path: Path, orthanc: LocalOrthanc) -> None:
    # Nothing listens on this port, so the C-STORE cannot connect. The file
    # is stored anyway, so the client needs its name to retry the send
    # instead of importing a second copy.
    closed_port = free_port()
    app = create_app(
        app_config(tmp_path, orthanc, ORTHANC_DICOM_PORT=closed_port, DCMTK_TIMEOUT=3)
    )
    client = app.test_client()

    response = import_file(
        client, part10(small_dataset(), ExplicitVRLittleEndian), "?send=true"
    )
    body = response.get_json()
    stored = client.get("/api/dicom/instances").get_json()["data"]["files"]

    assert response.status_code == 502, body
    assert_failure_envelope(body)
    assert len(stored) == 1
    assert stored[0]["filename"] in body["message"] + str(body.get("errors"))


def test_repair_source_keeps_non_ascii(client: FlaskClient) -> None:
    # Repair records SourceOfPreviousValues (LO) from the query. The file
    # has no Specific Character Set, so a non-ASCII source must either be
    # written with a character set that encodes it, or be rejected with 400.
    data = part10(small_dataset(StudyInstanceUID=None), ExplicitVRLittleEndian)
    source = "Hôpital Nord"

    response = import_file(client, data, "?repair=true&source=H%C3%B4pital%20Nord")
    body = response.get_json()
    if response.status_code == 400:
        assert "source" in body["errors"]
        return

    assert response.status_code == 201, body
    stored = pydicom.dcmread(body["data"]["results"][0]["filepath"])
    audit = stored.OriginalAttributesSequence[-1]
    assert audit.SourceOfPreviousValues == source


def test_deeply_nested_sequences(client: FlaskClient) -> None:
    # 300 levels make an 11 KB file that dcmdump reads, but pydicom's
    # recursive reader raises RecursionError on it. The import must accept
    # or reject the file (400), and a stored file must validate without 500.
    response = import_file(client, nested_sequence_file(300), "?repair=false")
    body = response.get_json()

    assert response.status_code in (201, 400), body["message"]
    if response.status_code == 400:
        return
    filename = body["data"]["results"][0]["filename"]
    validated = client.get(f"/api/dicom/instances/{filename}/validate")
    assert validated.status_code == 200, validated.get_json()["message"]


def test_rejected_uploads_same_name(client: FlaskClient) -> None:
    # Two rejected uploads with the same client filename must both be
    # reported. A map keyed by that name alone keeps only the last reason.
    form = {
        "files": [
            (io.BytesIO(b""), "scan.dcm"),
            (io.BytesIO(b"not a DICOM file " * 8), "scan.dcm"),
        ]
    }

    response = client.post(IMPORT_URL, data=form, content_type="multipart/form-data")
    body = response.get_json()
    messages = [message for reasons in body["errors"].values() for message in reasons]

    assert response.status_code == 400, body
    assert len(messages) == 2, body["errors"]


# --- Damaged content in create bodies ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "content"),
    [
        ("image", b"\xff\xd8\xff" + b"not JPEG data" * 4),
        ("pdf", b"%PDF-" + b"\x00not a PDF"),
    ],
    ids=["jpeg", "pdf"],
)
def test_damaged_content_is_400(
    client: FlaskClient, field: str, content: bytes
) -> None:
    # The content passes the signature check but the DCMTK converter cannot
    # read it: that is invalid input, not a bug of the service.
    request_body = {
        "patientID": "PID-HOSTILE",
        field: base64.b64encode(content).decode(),
    }

    response = client.post("/api/dicom/instances", json=request_body)
    body = response.get_json()

    assert response.status_code == 400, body
    assert_failure_envelope(body)
    assert field in body["errors"]
    assert ".tmp-" not in body["message"]


# --- Values that break the validate parser --------------------------------------------


def test_line_separator_in_patient_id(client: FlaskClient) -> None:
    # U+2028 LINE SEPARATOR passes the control character check. Either the
    # create route rejects it, or validate must still see the PatientID
    # that the file carries (str.splitlines splits dcmdump lines at U+2028).
    body = {**CONTRACT_EXAMPLE, "patientID": "PID\u20280001"}

    created = client.post("/api/dicom/instances", json=body)
    if created.status_code == 400:
        assert "patientID" in created.get_json()["errors"]
        return

    assert created.status_code == 201, created.get_json()
    filename = created.get_json()["data"]["filename"]
    report = client.get(f"/api/dicom/instances/{filename}/validate").get_json()["data"]
    assert report["missingTags"] == [], report["problems"]
    assert report["isValid"] is True, report["problems"]


# --- Send targets ----------------------------------------------------------------------


def test_send_host_with_port_rejected(
    client: FlaskClient, orthanc: LocalOrthanc
) -> None:
    # "127.0.0.1:<port>" matches the IPv6 pattern of the host field, and
    # storescu then connects to the port inside the host, not to "port".
    path = create_instance(client)
    target = {
        "host": f"127.0.0.1:{orthanc.settings.dicom_port}",
        "port": free_port(),
    }

    response = client.post(f"/api/dicom/instances/{path.name}/send", json=target)
    body = response.get_json()

    assert response.status_code == 400, body
    assert_failure_envelope(body)
    assert "host" in body["errors"]


# --- Races with DELETE -----------------------------------------------------------------


@pytest.mark.parametrize("route", ["dump", "download"])
def test_deleted_after_lookup_is_404(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    # A DELETE that lands between the filename lookup and the read.
    path = create_instance(client)
    resolve = FileStore.resolve

    def resolve_then_delete(store: FileStore, filename: str) -> Path:
        resolved = resolve(store, filename)
        resolved.unlink()
        return resolved

    monkeypatch.setattr(FileStore, "resolve", resolve_then_delete)

    response = client.get(f"/api/dicom/instances/{path.name}/{route}")

    assert response.status_code == 404, response.get_data(as_text=True)[:300]
    assert_failure_envelope(response.get_json())


def test_deleted_during_validate_is_404(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A DELETE that lands after pydicom read the file and before the IOD check.
    path = create_instance(client)
    read_dataset = validation.read_dataset

    def read_then_delete(target: Path) -> Any:
        result = read_dataset(target)
        target.unlink(missing_ok=True)
        return result

    monkeypatch.setattr(validation, "read_dataset", read_then_delete)

    response = client.get(f"/api/dicom/instances/{path.name}/validate")

    assert response.status_code == 404, response.get_json()
    assert_failure_envelope(response.get_json())


def test_put_does_not_recreate_deleted(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A DELETE that lands while PUT converts the new entry with dump2dcm.
    # The entry is gone, so PUT must return 404 and not bring it back.
    path = create_worklist(client)
    dump2dcm = dcmtk.dump2dcm

    def convert_then_delete(*args: Any, **kwargs: Any) -> Any:
        result = dump2dcm(*args, **kwargs)
        path.unlink(missing_ok=True)
        return result

    monkeypatch.setattr(dcmtk, "dump2dcm", convert_then_delete)

    response = client.put(
        f"/api/orthanc/worklists/{path.name}",
        json={**WORKLIST, "patientName": "Roe^Ann"},
    )

    assert response.status_code == 404, response.get_json()
    assert not path.exists()


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_worklist_deleted_after_write(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    # A DELETE that lands right after the entry was published, before the
    # response is built. The write succeeded, so the status must not be 500
    # (or 503, which blames the storage folder).
    existing = create_worklist(client)

    def publish_then_delete(original: Any) -> Any:
        def publish(store: FileStore, temporary: Path, *args: Any) -> Path:
            final: Path = original(store, temporary, *args)
            final.unlink()
            return final

        return publish

    monkeypatch.setattr(FileStore, "publish", publish_then_delete(FileStore.publish))
    monkeypatch.setattr(
        FileStore, "publish_preferred", publish_then_delete(FileStore.publish_preferred)
    )

    if method == "POST":
        response = client.post("/api/orthanc/worklists", json=WORKLIST)
    else:
        response = client.put(f"/api/orthanc/worklists/{existing.name}", json=WORKLIST)

    assert response.status_code in (200, 201, 404), response.get_json()
    assert "success" in response.get_json()


# --- Batch size -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "route", ["/api/dicom/instances/batch", "/api/orthanc/worklists/batch"]
)
def test_batch_over_1000_items_rejected(client: FlaskClient, route: str) -> None:
    # Batch send accepts at most 1000 filenames, and the create batches should
    # have a limit too. Without one, a single request runs dump2dcm once per
    # item for as long as the list goes on. Under gunicorn on the test
    # machine, 1000 valid worklist items took 24 s, and 100,000 invalid
    # instance items returned a 20 MB response after 17 s. Invalid items
    # keep this test fast.
    items = [{"unknownField": index} for index in range(1001)]

    response = client.post(route, json=items)
    body = response.get_json()

    assert response.status_code == 400, body["message"]
    assert_failure_envelope(body)
    assert "body" in body["errors"]
