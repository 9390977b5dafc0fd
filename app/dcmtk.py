"""The DCMTK command-line tools, run as subprocesses with argument lists.

This is the only module that starts processes. Each call has a timeout,
captures stdout and stderr, and turns a failure into a :class:`DcmtkError`
that carries the command line, the exit status and DCMTK's own message.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

TOOLS = ("dump2dcm", "dcmdump", "storescu", "echoscu", "findscu")

# dump2dcm reads lines of at most 4096 bytes by default; LT and UT values
# can be longer, so every call raises the limit.
DUMP_LINE_LIMIT = 1024 * 1024

# Extra seconds that a process gets beyond the network timeouts that DCMTK
# applies itself, so that DCMTK's own message wins over a killed process.
PROCESS_MARGIN = 5

_STATUS_LINE = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})(?::\s*(.*))?")
_SENDING_LINE = re.compile(r"Sending file: (.+)$")


class DcmtkError(Exception):
    """A DCMTK tool that could not run, timed out or exited with an error."""

    def __init__(
        self,
        message: str,
        command: Sequence[str],
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)


class DcmtkNotFound(DcmtkError):
    """The DCMTK binary is not on ``PATH``."""


class DcmtkTimeout(DcmtkError):
    """The DCMTK process ran longer than its timeout and was killed."""


@dataclass
class CommandResult:
    """The outcome of one DCMTK process."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class StoreStatus:
    """The C-STORE response status that the peer returned for one file."""

    path: str
    status: int | None
    description: str

    @property
    def succeeded(self) -> bool:
        # PS3.4 Annex B.2.3 defines 0x0000 as success. 0xB000, 0xB006 and
        # 0xB007 are warnings, for which the SCP still stored the instance.
        return self.status is not None and (
            self.status == 0x0000 or self.status in (0xB000, 0xB006, 0xB007)
        )

    @property
    def status_text(self) -> str:
        if self.status is None:
            return "no response"
        return f"0x{self.status:04X} {self.description}".strip()


@dataclass
class StoreResult:
    """The outcome of one ``storescu`` association."""

    result: CommandResult
    statuses: list[StoreStatus] = field(default_factory=list)


def run(tool: str, arguments: Sequence[str], timeout: float) -> CommandResult:
    """Run a DCMTK ``tool`` with ``arguments`` and return its output.

    Raises
    ------
    DcmtkNotFound
        If the binary is not on ``PATH``.
    DcmtkTimeout
        If the process runs longer than ``timeout`` seconds.
    DcmtkError
        If the process exits with a non-zero status.
    """
    command = [tool, *arguments]
    result = run_unchecked(command, timeout)

    if result.returncode != 0:
        message = _tool_message(result.stderr, result.stdout)
        logger.warning(
            "%s exited with status %d: %s", tool, result.returncode, message
        )
        raise DcmtkError(
            f"{tool} failed with exit status {result.returncode}: {message}",
            command,
            result.returncode,
            result.stderr,
        )
    return result


def run_unchecked(command: list[str], timeout: float) -> CommandResult:
    """Run ``command`` and return its result whatever the exit status."""
    tool = command[0]
    binary = shutil.which(tool)
    if binary is None:
        raise DcmtkNotFound(
            f"DCMTK tool {tool!r} was not found on PATH. Install DCMTK "
            "(Debian package 'dcmtk').",
            command,
        )

    logger.debug("Running %s", shlex.join(command))
    started = time.monotonic()
    try:
        completed = subprocess.run(
            [binary, *command[1:]],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        stderr = _decode(error.stderr)
        logger.warning("%s timed out after %s s", tool, timeout)
        raise DcmtkTimeout(
            f"{tool} timed out after {timeout:g} s.", command, None, stderr
        ) from None

    return CommandResult(
        command=command,
        returncode=completed.returncode,
        stdout=_decode(completed.stdout),
        stderr=_decode(completed.stderr),
        seconds=time.monotonic() - started,
    )


def dump2dcm(dump_path: Path, output_path: Path, timeout: float) -> CommandResult:
    """Convert the dump text file ``dump_path`` into a DICOM Part 10 file."""
    arguments = [
        "--line", str(DUMP_LINE_LIMIT),
        "--write-xfer-little",
        "--stop-on-error",
        str(dump_path),
        str(output_path),
    ]  # fmt: skip
    return run("dump2dcm", arguments, timeout)


def dcmdump(path: Path, timeout: float) -> str:
    """Return the ``dcmdump`` text of the DICOM file at ``path``.

    The dump prints strings as UTF-8 whatever the file's Specific Character
    Set, values in full, and UIDs as numbers rather than names, so that it
    can be parsed back.
    """
    arguments = ["--print-all", "--no-uid-names", str(path)]
    try:
        return run("dcmdump", ["--convert-to-utf8", *arguments], timeout).stdout
    except DcmtkNotFound:
        raise
    except DcmtkError as error:
        if error.returncode is None:
            raise
        # dcmdump exits with an error when it cannot convert a character set
        # that the file declares; the dump without conversion still helps.
        logger.warning("dcmdump could not convert %s to UTF-8; dumping as stored", path)

    return run("dcmdump", arguments, timeout).stdout


def storescu(
    paths: Sequence[Path],
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str,
    timeout: float,
) -> StoreResult:
    """Send ``paths`` to a Storage SCP over one association (C-STORE).

    The result lists the response status that the SCP returned for each file.
    A peer that rejects the association, or cannot be reached, raises
    :class:`DcmtkError` with DCMTK's message.
    """
    seconds = str(max(1, int(timeout)))
    command = [
        "storescu",
        "--debug",
        "--aetitle", calling_aet,
        "--call", called_aet,
        "--timeout", seconds,
        "--acse-timeout", seconds,
        "--dimse-timeout", seconds,
        "--socket-timeout", seconds,
        host,
        str(port),
        *[str(path) for path in paths],
    ]  # fmt: skip
    # Connecting, association and DIMSE each have their own timeout.
    result = run_unchecked(command, 3 * timeout + PROCESS_MARGIN)
    statuses = _store_statuses(result.stderr + result.stdout)

    if not statuses and result.returncode != 0:
        message = _tool_message(result.stderr, result.stdout)
        logger.warning(
            "storescu to %s@%s:%d failed with exit status %d: %s",
            called_aet, host, port, result.returncode, message,
        )  # fmt: skip
        raise DcmtkError(
            f"storescu failed with exit status {result.returncode}: {message}",
            command,
            result.returncode,
            result.stderr,
        )
    return StoreResult(result=result, statuses=statuses)


def echoscu(
    host: str, port: int, called_aet: str, calling_aet: str, timeout: float
) -> CommandResult:
    """Verify that a DICOM peer accepts an association (C-ECHO)."""
    seconds = str(max(1, int(timeout)))
    arguments = [
        "--aetitle", calling_aet,
        "--call", called_aet,
        "--timeout", seconds,
        "--acse-timeout", seconds,
        "--dimse-timeout", seconds,
        host,
        str(port),
    ]  # fmt: skip
    return run("echoscu", arguments, 3 * timeout + PROCESS_MARGIN)


def tool_version(tool: str, timeout: float) -> str:
    """Return the version line that ``tool --version`` prints."""
    output = run(tool, ["--version"], timeout).stdout
    for line in output.splitlines():
        if tool in line and "v" in line:
            return line.strip().strip("$").strip()
    return output.strip().splitlines()[0] if output.strip() else "unknown"


def _store_statuses(output: str) -> list[StoreStatus]:
    statuses: list[StoreStatus] = []
    current: str | None = None

    for line in output.splitlines():
        sending = _SENDING_LINE.search(line)
        if sending:
            current = sending.group(1).strip()
            continue

        status = _STATUS_LINE.search(line)
        if status and current is not None:
            code = int(status.group(1), 16)
            statuses.append(StoreStatus(current, code, (status.group(2) or "").strip()))
            current = None
    return statuses


def _tool_message(stderr: str, stdout: str) -> str:
    """Pick the lines of DCMTK's log that explain a failure."""
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines()]
    important = [line for line in lines if line[:2] in ("E:", "F:", "W:")]
    chosen = important or [line for line in lines if line]
    return " ".join(chosen[-6:]) or "no message"


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")


def is_available(tool: str) -> bool:
    """Return whether ``tool`` is on ``PATH``."""
    return shutil.which(tool) is not None
