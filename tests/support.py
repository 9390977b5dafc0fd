"""Helpers shared by the tests: the contract's example body, Orthanc and app settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.local_orthanc import LocalOrthanc, OrthancSettings, free_port

CONTRACT_EXAMPLE = {
    "patientID": "PID-0001",
    "patientName": "Doe^Jane",
    "patientBirthDate": "1980-05-17",
    "patientSex": "F",
    "studyDescription": "Chest X-ray",
    "seriesDescription": "PA view",
    "modality": "CR",
    "accessionNumber": "ACC20250801",
    "institutionName": "General Hospital",
    "referringPhysicianName": "Smith^John",
    "performingPhysicianName": "Jones^Mary",
}


def start_orthanc(directory: Path, **options: Any) -> LocalOrthanc:
    """Start an Orthanc in ``directory`` on free ports with ``options``."""
    settings = OrthancSettings(
        directory=directory,
        worklist_dir=options.pop("worklist_dir", directory / "worklists"),
        http_port=free_port(),
        dicom_port=free_port(),
        **options,
    )
    orthanc = LocalOrthanc(settings)
    orthanc.start()
    return orthanc


def app_config(tmp_path: Path, orthanc: LocalOrthanc, **overrides: Any) -> dict[str, Any]:
    """Return configuration overrides that point the app at ``orthanc``."""
    config: dict[str, Any] = {
        "DICOM_STORAGE_DIR": str(tmp_path / "instances"),
        "WORKLIST_DIR": str(orthanc.settings.worklist_dir),
        "ORTHANC_HOST": "127.0.0.1",
        "ORTHANC_DICOM_PORT": orthanc.settings.dicom_port,
        "ORTHANC_AET": orthanc.settings.aet,
        "ORTHANC_URL": orthanc.settings.url,
        "DICOM_AET": "TESTSCU",
        "DCMTK_TIMEOUT": 10,
        "API_TOKEN": "",
    }
    config.update(overrides)
    return config
