"""The DCMTK command-line tools, run as subprocesses with argument lists.

This is the only module that starts processes. Each call has a timeout,
captures stdout and stderr, and turns a failure into a :class:`DcmtkError`
that carries the command line, the exit status and DCMTK's own message.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

TOOLS = (
    "dump2dcm", "dcmdump", "storescu", "echoscu", "findscu",
    "dcmodify", "dcmconv", "img2dcm", "pdf2dcm",
)  # fmt: skip

# dump2dcm reads lines of at most 4096 bytes by default; LT and UT values
# can be longer, so every call raises the limit.
DUMP_LINE_LIMIT = 1024 * 1024

# Extra seconds that a network tool gets beyond its total time budget, so
# that DCMTK's own timeout message wins over a killed process when only one
# phase (connect, association or DIMSE) stalls.
PROCESS_MARGIN = 2

_STATUS_LINE = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})(?::\s*(.*))?")
_SENDING_LINE = re.compile(r"Sending file: (.+)$")
# With --no-halt, storescu skips a file it cannot send and logs the reason.
_IGNORED_LINE = re.compile(r"W: (.+) in file: (.+), ignoring file$")


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
            return self.description or "no response"
        return f"0x{self.status:04X} {self.description}".strip()


@dataclass
class StoreResult:
    """The outcome of one ``storescu`` association."""

    result: CommandResult
    statuses: list[StoreStatus] = field(default_factory=list)


def run(
    tool: str,
    arguments: Sequence[str],
    timeout: float,
    environment: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run a DCMTK ``tool`` with ``arguments`` and return its output.

    ``environment`` adds variables to the process's environment.

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
    result = run_unchecked(command, timeout, environment)

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


def run_unchecked(
    command: list[str], timeout: float, environment: Mapping[str, str] | None = None
) -> CommandResult:
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
            env={**os.environ, **environment} if environment else None,
        )
    except subprocess.TimeoutExpired as error:
        stderr = _decode(error.stderr)
        output = _tool_message(stderr, _decode(error.stdout))
        logger.warning("%s timed out after %s s: %s", tool, timeout, output)
        raise DcmtkTimeout(
            f"{tool} timed out after {timeout:g} s and was stopped. Its last "
            f"output: {output}",
            command,
            None,
            stderr,
        ) from None

    return CommandResult(
        command=command,
        returncode=completed.returncode,
        stdout=_decode(completed.stdout),
        stderr=_decode(completed.stderr),
        seconds=time.monotonic() - started,
    )


def dump2dcm(
    dump_path: Path,
    output_path: Path,
    timeout: float,
    dictionary: Path | None = None,
) -> CommandResult:
    """Convert the dump text file ``dump_path`` into a DICOM Part 10 file.

    ``dictionary`` replaces DCMTK's data dictionary (``DCMDICTPATH``); it
    must contain every element of the dump and the file meta information.
    """
    arguments = [
        "--line", str(DUMP_LINE_LIMIT),
        "--write-xfer-little",
        "--stop-on-error",
        str(dump_path),
        str(output_path),
    ]  # fmt: skip
    environment = {"DCMDICTPATH": str(dictionary)} if dictionary else None
    return run("dump2dcm", arguments, timeout, environment)


def dcmdump(path: Path, timeout: float) -> str:
    """Return the ``dcmdump`` text of the DICOM file at ``path``.

    The dump prints strings as UTF-8 whatever the file's Specific Character
    Set, values in full, and UIDs as numbers rather than names, so that it
    can be parsed back.

    dcmdump 3.6.7 reads the dataset with the transfer syntax that the file
    meta information names. An import without repair stores files whose
    meta information names the wrong one, so when that read fails, the
    dump is retried with the transfer syntax detected from the dataset
    (``--read-xfer-detect``). The dump text then shows the syntax used
    under "# Dicom-Data-Set". If the retry fails too, the error of the
    first read is raised.
    """
    try:
        return _dump_text(path, [], timeout)
    except DcmtkNotFound:
        raise
    except DcmtkError as error:
        if error.returncode is None:
            raise
        first_error = error

    try:
        text = _dump_text(path, ["--read-xfer-detect"], timeout)
    except DcmtkNotFound:
        raise
    except DcmtkError as error:
        if error.returncode is None:
            raise
        raise first_error from None
    logger.warning(
        "dcmdump read %s only with the transfer syntax detected from the dataset; "
        "its file meta information names another one", path,
    )  # fmt: skip
    return text


def _dump_text(path: Path, read_options: list[str], timeout: float) -> str:
    arguments = [*read_options, "--print-all", "--no-uid-names", str(path)]
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
        # Proposes presentation contexts only for the SOP Classes of the
        # files, each with JPEG Baseline and Extended beside the uncompressed
        # syntaxes. JPEG files that img2dcm writes are sent as they are, and
        # storescu picks the context whose transfer syntax equals the file's,
        # so uncompressed files stay uncompressed.
        "--required",
        "--propose-jpeg8",
        # Goes on after a failed store or an unreadable file, so one bad file
        # of a batch does not stop the others.
        "--no-halt",
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
    # DCMTK applies each timeout to one phase (connect, association, one
    # DIMSE message), so a peer that is slow in every phase could hold the
    # association for several timeouts. The process deadline caps the whole
    # call at one timeout per file plus the margin.
    result = run_unchecked(command, timeout * max(1, len(paths)) + PROCESS_MARGIN)
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
    return run("echoscu", arguments, timeout + PROCESS_MARGIN)


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
        ignored = _IGNORED_LINE.search(line)
        if ignored:
            reason, path = ignored.groups()
            statuses.append(StoreStatus(path.strip(), None, f"not sent: {reason}"))
            continue

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


def dcmdump_check(path: Path, detect_syntax: bool, timeout: float) -> None:
    """Parse the whole file at ``path`` with ``dcmdump`` and raise if it is incomplete.

    With ``detect_syntax`` the transfer syntax of the file meta information
    is ignored and detected from the dataset (``--read-xfer-detect``).
    A truncated file raises :class:`DcmtkError` whose message is DCMTK's,
    for example "premature end of stream".
    """
    arguments = ["--log-level", "error", "--print-short", str(path)]
    if detect_syntax:
        arguments.insert(0, "--read-xfer-detect")
    run("dcmdump", arguments, timeout)


def dcmodify(
    path: Path,
    insertions: Sequence[tuple[str, str]],
    detect_syntax: bool,
    timeout: float,
) -> CommandResult:
    """Insert or overwrite elements of the file at ``path`` in place.

    Each insertion is a ``dcmodify`` tag path such as ``(0020,000d)`` or
    ``(0400,0561)[0].(0400,0562)`` and its value. The file is written in
    file format, so ``dcmodify`` rebuilds the file meta information from the
    dataset (MediaStorageSOPClassUID, MediaStorageSOPInstanceUID and the
    transfer syntax that it read the dataset with). With ``detect_syntax``
    the transfer syntax named in the meta information is ignored and
    detected from the dataset.
    """
    arguments = ["--no-backup", "--write-file"]
    if detect_syntax:
        arguments.append("--read-xfer-detect")
    for tag_path, value in insertions:
        arguments += ["--insert", f"{tag_path}={value}"]
    arguments.append(str(path))
    return run("dcmodify", arguments, timeout)


def dcmconv_utf8(
    path: Path, output_path: Path, detect_syntax: bool, timeout: float
) -> CommandResult:
    """Write the file at ``path`` to ``output_path`` with every text value in UTF-8.

    ``dcmconv --convert-to-utf8`` converts the values that Specific Character
    Set (0008,0005) affects and sets it to ISO_IR 192, also in a file that
    had none. It fails on a value that the declared character set does not
    decode, such as a non-ASCII byte in a file without Specific Character
    Set. With ``detect_syntax`` the transfer syntax of the file meta
    information is ignored and detected from the dataset.
    """
    arguments = ["--convert-to-utf8"]
    if detect_syntax:
        arguments.append("--read-xfer-detect")
    arguments += [str(path), str(output_path)]
    return run("dcmconv", arguments, timeout)


def img2dcm(
    image_path: Path,
    output_path: Path,
    input_format: str,
    sop_class_option: str,
    keys: Sequence[tuple[str, str]],
    timeout: float,
) -> CommandResult:
    """Convert a JPEG or BMP image into a DICOM file.

    ``input_format`` is ``JPEG`` or ``BMP``. ``sop_class_option`` selects the
    SOP Class (``--sec-capture`` or ``--vl-photo``). ``keys`` are element
    keywords and values passed with ``--key``, applied after img2dcm has
    filled its own defaults.
    """
    arguments = [
        "--input-format", input_format,
        sop_class_option,
        *_key_arguments(keys),
        str(image_path),
        str(output_path),
    ]  # fmt: skip
    return run("img2dcm", arguments, timeout)


def pdf2dcm(
    pdf_path: Path,
    output_path: Path,
    keys: Sequence[tuple[str, str]],
    timeout: float,
) -> CommandResult:
    """Encapsulate a PDF document as an Encapsulated PDF DICOM file.

    ``keys`` are element keywords and values passed with ``--key``. They
    override what pdf2dcm writes itself, such as its generated UIDs.
    """
    arguments = [*_key_arguments(keys), str(pdf_path), str(output_path)]
    return run("pdf2dcm", arguments, timeout)


def _key_arguments(keys: Sequence[tuple[str, str]]) -> list[str]:
    arguments: list[str] = []
    for keyword, value in keys:
        arguments += ["--key", f"{keyword}={value}"]
    return arguments
