"""A local Orthanc for development, the README's run command and tests.

It writes an Orthanc configuration into a folder of its own, with the
ModalityWorklists plugin serving ``.wl`` files from the service's worklist
folder, and starts the ``Orthanc`` binary of the Debian package.

Orthanc 1.10 (Debian 12) has no setting that binds its ports to one address,
so both ports listen on every interface. The REST API accepts only local
clients (``RemoteAccessAllowed`` false), and a Lua filter rejects C-STORE and
C-FIND requests from any host but this one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

logger = logging.getLogger(__name__)

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
WORKLIST_PLUGIN = "libModalityWorklists.so"
START_TIMEOUT = 30
SERVER_NAME = "dicom-service-local"

# Lua callbacks of Orthanc: an instance received over DICOM is stored, and a
# C-FIND or worklist query gets responses, only for a loopback client.
# NOTE: the rejection of other hosts is not exercised by the tests, which
# reach Orthanc over loopback only.
LOOPBACK_FILTER = """\
local function IsLoopback(ip)
  return ip == '::1' or string.sub(ip, 1, 4) == '127.'
    or string.sub(ip, 1, 11) == '::ffff:127.'
end

local function RequireLoopback(origin)
  if not IsLoopback(origin['RemoteIp'] or '') then
    error('DICOM queries are accepted from this host only')
  end
end

function ReceivedInstanceFilter(dicom, origin, info)
  if origin['RequestOrigin'] == 'DicomProtocol' then
    return IsLoopback(origin['RemoteIp'] or '')
  end
  return true
end

function IncomingFindRequestFilter(query, origin)
  RequireLoopback(origin)
  return query
end

function IncomingWorklistRequestFilter(query, origin)
  RequireLoopback(origin)
  return query
end
"""


@dataclass
class OrthancSettings:
    """Folders and ports of a local Orthanc."""

    directory: Path
    worklist_dir: Path
    http_port: int
    dicom_port: int
    aet: str = "ORTHANC"
    check_called_aet: bool = False
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def worklist_plugin() -> str:
    """Return the path of the ModalityWorklists plugin that ships with Orthanc."""
    for folder in PLUGIN_DIRS:
        for candidate in sorted(Path(folder).glob(f"{WORKLIST_PLUGIN}*")):
            return str(candidate)
    raise FileNotFoundError(
        f"{WORKLIST_PLUGIN} not found in {', '.join(PLUGIN_DIRS)}. Install the "
        "Debian package 'orthanc'."
    )


def configuration(settings: OrthancSettings) -> dict[str, Any]:
    """Return the Orthanc configuration for ``settings``."""
    storage = settings.directory / "storage"
    return {
        "Name": SERVER_NAME,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": settings.http_port,
        "DicomPort": settings.dicom_port,
        "DicomAet": settings.aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": settings.check_called_aet,
        # Modalities that are not declared in advance may store, echo and
        # query the worklist, from this host only (see LOOPBACK_FILTER).
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFindWorklist": True,
        "DicomAlwaysAllowFind": True,
        # Text of files without Specific Character Set, and of C-FIND
        # responses, is UTF-8 so names in any script come back intact.
        "DefaultEncoding": "Utf8",
        "Plugins": [worklist_plugin()],
        "LuaScripts": [str(settings.directory / "loopback-filter.lua")],
        "Worklists": {"Enable": True, "Database": str(settings.worklist_dir)},
        "StableAge": 1,
        "SaveJobs": False,
    }


def write_configuration(settings: OrthancSettings) -> Path:
    """Write ``orthanc.json`` into the settings' folder and return its path."""
    settings.directory.mkdir(parents=True, exist_ok=True)
    settings.worklist_dir.mkdir(parents=True, exist_ok=True)
    (settings.directory / "loopback-filter.lua").write_text(LOOPBACK_FILTER)
    path = settings.directory / "orthanc.json"
    path.write_text(json.dumps(configuration(settings), indent=2))
    return path


class LocalOrthanc:
    """An Orthanc process started from a written configuration."""

    def __init__(self, settings: OrthancSettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start Orthanc and wait until its REST API responds."""
        binary = shutil.which("Orthanc")
        if binary is None:
            raise FileNotFoundError("Orthanc not found on PATH. Install the Debian package 'orthanc'.")

        for port in (self.settings.http_port, self.settings.dicom_port):
            _check_port_free(port)

        config_path = write_configuration(self.settings)
        log = open(self.settings.directory / "orthanc.log", "ab")
        self.process = subprocess.Popen(
            [binary, str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.settings.directory,
        )
        log.close()
        self._wait_until_ready()
        logger.info(
            "Orthanc %s listening on %s (DICOM port %d)",
            self.settings.aet, self.settings.url, self.settings.dicom_port,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop Orthanc and wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        session = requests.Session()
        session.trust_env = False
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with status {self.process.returncode}; see "
                    f"{self.settings.directory / 'orthanc.log'}."
                )
            try:
                response = session.get(self.settings.url + "/system", timeout=1)
                # Another Orthanc on the same port would respond too; only
                # the name written into this configuration counts.
                if response.ok and response.json().get("Name") == SERVER_NAME:
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not respond on {self.settings.url} within {START_TIMEOUT} s.")


def _check_port_free(port: int) -> None:
    """Raise ``RuntimeError`` if a process listens on ``port`` already."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as error:
            raise RuntimeError(
                f"TCP port {port} is in use ({error.strerror}). The Debian package "
                "'orthanc' starts a system-wide Orthanc on ports 4242 and 8042: "
                "stop it with 'systemctl disable --now orthanc', or choose other "
                "ports (ORTHANC_DICOM_PORT, ORTHANC_HTTP_PORT)."
            ) from None


def main(argv: list[str] | None = None) -> int:
    """Run a local Orthanc in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", default="data/orthanc", help="folder for Orthanc's configuration, database and log")
    parser.add_argument("--worklist-dir", default=os.environ.get("WORKLIST_DIR", "data/worklists"), help="folder of .wl files that the worklist plugin serves")
    parser.add_argument("--http-port", type=int, default=8042, help="REST API port on 127.0.0.1")
    parser.add_argument("--dicom-port", type=int, default=int(os.environ.get("ORTHANC_DICOM_PORT", 4242)), help="DICOM port on all interfaces")
    parser.add_argument("--aet", default=os.environ.get("ORTHANC_AET", "ORTHANC"), help="Orthanc's AE title")
    parser.add_argument("--ready-file", help="file to create once Orthanc responds")
    arguments = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = OrthancSettings(
        directory=Path(arguments.directory).resolve(),
        worklist_dir=Path(arguments.worklist_dir).resolve(),
        http_port=arguments.http_port,
        dicom_port=arguments.dicom_port,
        aet=arguments.aet,
    )
    orthanc = LocalOrthanc(settings)
    try:
        orthanc.start()
    except (RuntimeError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 1
    if arguments.ready_file:
        Path(arguments.ready_file).touch()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        assert orthanc.process is not None
        orthanc.process.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        orthanc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
