"""The objects that the routes share, built once per application."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import current_app

from .builder import InstanceBuilder
from .dump import DumpRenderer
from .iod import IodValidator
from .orthanc import OrthancClient
from .storage import FileStore

INSTANCE_PATTERN = r"instance_[0-9]{1,40}\.dcm"
WORKLIST_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,119}\.wl"


@dataclass
class Services:
    """Stores, renderer, builders and clients of one application."""

    config: dict[str, Any]
    instances: FileStore
    worklists: FileStore
    renderer: DumpRenderer
    builder: InstanceBuilder
    iod: IodValidator
    orthanc: OrthancClient | None

    @property
    def timeout(self) -> float:
        return float(self.config["DCMTK_TIMEOUT"])


def build_services(config: dict[str, Any]) -> Services:
    """Create the services described by ``config`` and open their folders."""
    instances = FileStore(config["DICOM_STORAGE_DIR"], INSTANCE_PATTERN, "instance")
    worklists = FileStore(config["WORKLIST_DIR"], WORKLIST_PATTERN, "worklist")
    instances.open()
    worklists.open()

    renderer = DumpRenderer()
    builder = InstanceBuilder(
        instances, renderer, config["DICOM_UID_ROOT"], config["DCMTK_TIMEOUT"]
    )
    standard_dir = config["DICOM_STANDARD_DIR"]
    iod = IodValidator(Path(standard_dir) if standard_dir else None)
    iod.load()  # once per process, so a missing standard is logged at start
    orthanc = (
        OrthancClient(config["ORTHANC_URL"], config["DCMTK_TIMEOUT"])
        if config["ORTHANC_URL"]
        else None
    )
    return Services(config, instances, worklists, renderer, builder, iod, orthanc)


def services() -> Services:
    """Return the services of the current application."""
    found: Services = current_app.extensions["dicom_services"]
    return found
