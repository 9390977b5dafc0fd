"""C-STORE of stored files to a PACS with ``storescu``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from . import dcmtk
from .errors import NotFound, PacsError
from .orthanc import OrthancClient, OrthancError

logger = logging.getLogger(__name__)


@dataclass
class StoreTarget:
    """The Storage SCP to send to and the calling AE title to use."""

    host: str
    port: int
    called_aet: str
    calling_aet: str
    is_configured_orthanc: bool


def target_from(body: dict[str, Any], config: dict[str, Any]) -> StoreTarget:
    """Combine the optional overrides of a send body with the configured Orthanc."""
    host = body.get("host", config["ORTHANC_HOST"])
    port = body.get("port", config["ORTHANC_DICOM_PORT"])
    called = body.get("aet", config["ORTHANC_AET"])
    configured = (
        host == config["ORTHANC_HOST"]
        and port == config["ORTHANC_DICOM_PORT"]
        and called == config["ORTHANC_AET"]
    )
    return StoreTarget(
        host=host,
        port=int(port),
        called_aet=called,
        calling_aet=body.get("sourceAet", config["DICOM_AET"]),
        is_configured_orthanc=configured,
    )


def send_files(
    paths: list[Path],
    target: StoreTarget,
    timeout: float,
    orthanc: OrthancClient | None,
) -> list[dict[str, Any]]:
    """Send ``paths`` over one association and return one result per file.

    Raises
    ------
    PacsError
        If the association could not be established; the message contains
        DCMTK's own message.
    NotFound
        If storescu failed because a file was deleted while it was being sent.
    """
    try:
        outcome = dcmtk.storescu(
            paths, target.host, target.port, target.called_aet, target.calling_aet, timeout
        )
    except dcmtk.DcmtkNotFound:
        raise
    except dcmtk.DcmtkError as error:
        deleted = [path.name for path in paths if not path.exists()]
        if deleted:
            raise NotFound(
                f"{', '.join(deleted)} was deleted while it was being sent to "
                f"{target.called_aet}@{target.host}:{target.port}. DCMTK output: "
                f"{error.message}"
            ) from error
        raise PacsError(
            f"Sending to {target.called_aet}@{target.host}:{target.port} failed: "
            f"{error.message}"
        ) from error

    statuses = {Path(status.path).name: status for status in outcome.statuses}
    # storescu runs with --debug so that the statuses can be parsed; the
    # response keeps its informational, warning and error lines.
    lines = (outcome.result.stderr + outcome.result.stdout).splitlines()
    output = "\n".join(line for line in lines if not line.startswith("D:")).strip()
    results = []
    for path in paths:
        status = statuses.get(path.name)
        result: dict[str, Any] = {
            "filename": path.name,
            "success": bool(status and status.succeeded),
            "status": status.status_text if status else "no response",
        }
        if not result["success"] and not path.exists():
            result["deleted"] = True
            result["status"] = "not sent: the file was deleted while it was being sent"
        if result["success"] and orthanc is not None and target.is_configured_orthanc:
            result["orthancId"] = _confirm(orthanc, path)
        results.append(result)

    succeeded = sum(1 for result in results if result["success"])
    logger.info(
        "C-STORE to %s@%s:%d: %d of %d files stored",
        target.called_aet, target.host, target.port, succeeded, len(paths),
    )  # fmt: skip
    for result in results:
        result["output"] = output
    return results


def _confirm(orthanc: OrthancClient, path: Path) -> str | None:
    """Return the Orthanc ID of the instance in ``path``, or ``None`` if not found."""
    try:
        dataset = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        uid = str(dataset.get("SOPInstanceUID", ""))
        return orthanc.find_instance(uid) if uid else None
    except (OrthancError, InvalidDicomError, OSError) as error:
        logger.warning("Could not confirm %s in Orthanc: %s", path.name, error)
        return None
