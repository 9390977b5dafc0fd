"""Import of uploaded DICOM files: inspect, optionally repair, then store.

Every file is first written under a temporary name in the instance folder.
A file that is not DICOM, is truncated, cannot be read or cannot be
repaired is removed and reported. Any other file is published under a new
``instance_<digits>.dcm`` name, repaired first when repair is on and
inspected again, so that the response describes the stored file.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, dcmtk
from .inspection import Inspection, element_text, inspect_file
from .repair import (
    Change,
    RepairContext,
    RepairError,
    apply_changes,
    plan_changes,
    remember_uids,
)
from .storage import FileStore
from .uidmap import UidMap

logger = logging.getLogger(__name__)


@dataclass
class Upload:
    """One uploaded file: the name the client gave it and its bytes."""

    name: str
    data: bytes


@dataclass
class ImportOptions:
    """Settings of one import request."""

    repair: bool
    reason: str
    source: str
    uid_root: str
    timeout: float


@dataclass
class _Pending:
    upload: Upload
    path: Path
    inspection: Inspection


def import_files(
    uploads: list[Upload], store: FileStore, options: ImportOptions
) -> list[dict[str, Any]]:
    """Inspect, repair on request and store ``uploads``.

    Returns one result per upload, in the order of ``uploads``.
    """
    pending: list[_Pending] = []
    try:
        for upload in uploads:
            path = store.temporary_path(".dcm")
            pending.append(_Pending(upload, path, _inspect(upload, path, options)))

        context = RepairContext(
            upload_id=uuid.uuid4().hex,
            uid_root=options.uid_root,
            uid_map=UidMap(store.root),
            reason=options.reason,
            source=options.source,
            modifying_system=f"dicom-service {__version__}",
        )
        accepted = [item.inspection for item in pending if item.inspection.rejected is None]
        remember_uids(accepted, context)
        return [_finish(item, store, options, context) for item in pending]
    finally:
        for item in pending:
            item.path.unlink(missing_ok=True)


def _inspect(upload: Upload, path: Path, options: ImportOptions) -> Inspection:
    path.write_bytes(upload.data)
    if not upload.data:
        return Inspection(name=upload.name, rejected=f"{upload.name} is empty.")
    return inspect_file(path, upload.name, options.timeout)


def _finish(
    item: _Pending, store: FileStore, options: ImportOptions, context: RepairContext
) -> dict[str, Any]:
    inspection = item.inspection
    result: dict[str, Any] = {"name": item.upload.name}
    if inspection.rejected is not None:
        logger.info("Rejected upload %s: %s", item.upload.name, inspection.rejected)
        return {**result, "accepted": False, "message": inspection.rejected}

    found = inspection.problems
    changes: list[Change] = []
    if options.repair:
        changes = plan_changes(inspection, item.upload.data, context)

    if changes:
        try:
            apply_changes(item.path, inspection, changes, context, options.timeout)
        except dcmtk.DcmtkNotFound:
            raise
        except dcmtk.DcmtkError as error:
            message = (
                f"Repair of {item.upload.name} failed, so it was not stored: "
                f"{error.message}"
            )
            logger.warning("%s (command: %s)", message, error.command_line)
            return {**result, "accepted": False, "message": message}
        except RepairError as error:
            message = f"Repair of {item.upload.name} failed, so it was not stored: {error}"
            logger.warning("%s", message)
            return {**result, "accepted": False, "message": message}
        inspection = inspect_file(item.path, item.upload.name, options.timeout)

    if inspection.rejected is not None:
        # dcmodify wrote a file that dcmdump cannot read back: a bug in the
        # planned changes rather than a bad upload.
        raise RuntimeError(f"Repair of {item.upload.name} produced an unreadable file.")

    final = store.publish(item.path)
    remaining = inspection.problems
    logger.info(
        "Imported %s as %s (%d problems found, %d changes, %d remaining)",
        item.upload.name, final.name, len(found), len(changes), len(remaining),
    )  # fmt: skip
    return {
        **result,
        "accepted": True,
        "message": _message(found, changes, remaining),
        "filename": final.name,
        "filepath": str(final),
        "repaired": bool(changes),
        "problemsFound": found,
        "changes": [change.as_dict() for change in changes],
        "remainingProblems": remaining,
        "complete": not inspection.missing_uids,
        "uids": {
            "studyInstanceUID": element_text(inspection.dataset, "StudyInstanceUID") or None,
            "seriesInstanceUID": element_text(inspection.dataset, "SeriesInstanceUID") or None,
            "sopInstanceUID": element_text(inspection.dataset, "SOPInstanceUID") or None,
        },
        "sopClassUID": element_text(inspection.dataset, "SOPClassUID") or None,
        "transferSyntaxUID": element_text(inspection.meta, "TransferSyntaxUID") or None,
    }


def _message(found: list[str], changes: list[Change], remaining: list[str]) -> str:
    if not found:
        return "Stored; no problems found."
    if changes and not remaining:
        return f"Stored after repair: {len(changes)} changes fixed {len(found)} problems."
    if changes:
        return (
            f"Stored after repair: {len(changes)} changes; {len(remaining)} problems "
            "could not be repaired."
        )
    return (
        f"Stored unchanged with {len(found)} problems. Upload again with "
        "repair=true to fix them."
    )
