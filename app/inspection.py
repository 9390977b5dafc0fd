"""Inspection of uploaded files: is it DICOM, is it complete, what is missing.

The checks run in this order, and the first two reject the file:

1. The file is DICOM: it has the Part 10 preamble and ``DICM`` prefix, or
   it starts with a plausible data element (a dataset without file meta
   information).
2. The file is complete and readable: ``dcmdump`` parses every element to
   the end, and pydicom reads the dataset. pydicom fails on sequences
   nested deeper than Python's recursion limit allows.
3. The file meta information matches the dataset: present at all, the
   transfer syntax names the encoding that the dataset really uses, and
   MediaStorageSOPClassUID and MediaStorageSOPInstanceUID equal the
   dataset's SOPClassUID and SOPInstanceUID (PS3.10 section 7.1).
4. The type 1 UIDs that Orthanc and C-STORE need, and the common type 2
   attributes of the Patient, General Study, General Series, General
   Equipment and General Image modules (PS3.3 section C.7), are present.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from . import dcmtk

logger = logging.getLogger(__name__)

PREAMBLE_LENGTH = 128
PREFIX = b"DICM"

# Type 1 elements without which Orthanc rejects the instance ("required
# tags are missing") or storescu cannot negotiate a presentation context.
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")

# Type 2 elements that every image or document IOD of PS3.3 includes through
# the Patient, General Study, General Series and General Equipment modules.
TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",
    "Manufacturer",
)

# InstanceNumber is type 2 only in the General Image module. The
# Encapsulated Document module makes it type 1.
IMAGE_TYPE2_KEYWORDS = ("InstanceNumber",)

_VALUE_REPRESENTATIONS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS",
    b"LO", b"LT", b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH",
    b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
    b"UR", b"US", b"UT", b"UV",
}  # fmt: skip

# Explicit VRs whose length field is 4 bytes after 2 reserved bytes
# (PS3.5 section 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}

_PIXEL_DATA = 0x7FE00010


@dataclass
class Encoding:
    """Encoding of a dataset: explicit or implicit VR, and byte order."""

    implicit_vr: bool
    little_endian: bool

    @property
    def transfer_syntax(self) -> str:
        if self.implicit_vr:
            return str(ImplicitVRLittleEndian)
        if self.little_endian:
            return str(ExplicitVRLittleEndian)
        return str(ExplicitVRBigEndian)


@dataclass
class Inspection:
    """Findings of the checks on one uploaded file."""

    name: str
    rejected: str | None = None
    has_meta: bool = False
    declared_syntax: str | None = None
    encoding: Encoding | None = None
    dataset: Dataset = field(default_factory=Dataset)
    meta: Dataset = field(default_factory=Dataset)
    missing_uids: list[str] = field(default_factory=list)
    missing_type2: list[str] = field(default_factory=list)
    meta_problems: list[str] = field(default_factory=list)

    @property
    def syntax_mismatch(self) -> bool:
        """Whether the meta information names an encoding that the dataset does not use."""
        if self.declared_syntax is None or self.encoding is None:
            return False
        declared = declared_encoding(self.declared_syntax)
        return declared is not None and declared != self.encoding

    @property
    def problems(self) -> list[str]:
        """Every finding as a sentence, rejection first."""
        found = [self.rejected] if self.rejected else []
        found += self.meta_problems
        found += [f"{keyword} (type 1) is missing or empty." for keyword in self.missing_uids]
        found += [f"{keyword} (type 2) is missing." for keyword in self.missing_type2]
        return found


def inspect_file(path: Path, name: str, timeout: float) -> Inspection:
    """Run every check on the uploaded file at ``path``, naming it ``name`` in messages."""
    inspection = Inspection(name=name)
    data = path.read_bytes()

    offset = _meta_end(data)
    inspection.has_meta = offset is not None
    start = offset if offset is not None else 0
    inspection.encoding = detect_encoding(data[start:], bare=offset is None)
    if inspection.has_meta:
        inspection.meta = _read_meta(path)
        syntax = inspection.meta.get("TransferSyntaxUID")
        inspection.declared_syntax = str(syntax) if syntax else None

    deflated = inspection.declared_syntax == DeflatedExplicitVRLittleEndian
    if inspection.encoding is None and not deflated:
        inspection.rejected = (
            f"{name} is not a DICOM file: it has neither the 'DICM' prefix after a "
            "128-byte preamble nor a dataset that starts with a valid data element."
        )
        return inspection

    try:
        dcmtk.dcmdump_check(path, inspection.syntax_mismatch, timeout)
    except dcmtk.DcmtkNotFound:
        raise
    except dcmtk.DcmtkError as error:
        inspection.rejected = (
            f"{name} is truncated or damaged, so it was not stored. "
            f"dcmdump reported: {_dcmtk_reason(error)}"
        )
        return inspection

    try:
        inspection.dataset = _read_dataset(path, data, start, inspection)
    except RecursionError:
        # dcmdump reads such a file, but pydicom descends into each level of
        # an undefined-length sequence with recursive calls.
        inspection.rejected = (
            f"{name} has sequences nested more deeply than the service can read "
            "(pydicom reached Python's recursion limit), so it was not stored."
        )
        return inspection
    _check_meta(inspection)
    _check_attributes(inspection)
    return inspection


def detect_encoding(dataset_bytes: bytes, bare: bool = False) -> Encoding | None:
    """Detect the encoding from the first data element, or ``None`` if there is none.

    A dataset starts with an element of an even group from 0008 to 7FE0.
    The byte order is the one that reads that group, and the VR is explicit
    when bytes 4 and 5 are a value representation. A ``bare`` dataset, one
    without file meta information, must start with group 0008, because its
    elements are sorted by tag and every composite IOD has SOP Class UID
    (0008,0016). Other files, such as RIFF images, can look like one element
    of a higher group.
    """
    if len(dataset_bytes) < 8:
        return None

    little_group = struct.unpack_from("<H", dataset_bytes)[0]
    big_group = struct.unpack_from(">H", dataset_bytes)[0]
    explicit = dataset_bytes[4:6] in _VALUE_REPRESENTATIONS
    if bare and BARE_FIRST_GROUP not in (little_group, big_group):
        return None

    if _plausible_group(little_group):
        if explicit:
            return Encoding(implicit_vr=False, little_endian=True)
        length = struct.unpack_from("<I", dataset_bytes, 4)[0]
        if length == 0xFFFFFFFF or length <= len(dataset_bytes) - 8:
            return Encoding(implicit_vr=True, little_endian=True)
        return None

    # PS3.5 section A.3 defines no implicit VR big endian transfer syntax.
    if _plausible_group(big_group) and explicit:
        return Encoding(implicit_vr=False, little_endian=False)
    return None


def actual_encoding_if_wrong(data: bytes, declared_syntax: str) -> Encoding | None:
    """Return the dataset's encoding if ``declared_syntax`` names another one, else ``None``.

    ``data`` is the start of a Part 10 file, at least up to the first data
    element after the file meta information. ``None`` also means that the
    encoding could not be detected, as for a deflated dataset.
    """
    offset = _meta_end(data)
    if offset is None:
        return None
    encoding = detect_encoding(data[offset:])
    declared = declared_encoding(declared_syntax)
    if encoding is None or declared is None or declared == encoding:
        return None
    return encoding


def declared_encoding(transfer_syntax: str) -> Encoding | None:
    """Return the dataset encoding that ``transfer_syntax`` prescribes.

    Every compressed (encapsulated) transfer syntax encodes the dataset in
    explicit VR little endian (PS3.5 section A.4). Deflate returns ``None``
    because the encoding cannot be seen in the compressed bytes.
    """
    if transfer_syntax == ImplicitVRLittleEndian:
        return Encoding(implicit_vr=True, little_endian=True)
    if transfer_syntax == ExplicitVRBigEndian:
        return Encoding(implicit_vr=False, little_endian=False)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return None
    return Encoding(implicit_vr=False, little_endian=True)


def element_text(dataset: Dataset, keyword: str) -> str:
    """Return the value of ``keyword`` as text, ``""`` when absent or empty."""
    value = dataset.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


# Group of the first element of a dataset without file meta information.
BARE_FIRST_GROUP = 0x0008


def _plausible_group(group: int) -> bool:
    return group % 2 == 0 and 0x0008 <= group <= 0x7FE0


def _meta_end(data: bytes) -> int | None:
    """Return the offset where the dataset starts after group 0002, or ``None``."""
    if data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] != PREFIX:
        return None

    # PS3.10 section 7.1: the meta information is explicit VR little endian.
    offset = PREAMBLE_LENGTH + 4
    while offset + 8 <= len(data):
        group = struct.unpack_from("<H", data, offset)[0]
        if group != 0x0002:
            break
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, offset + 8)[0]
            offset += 12 + length
        else:
            length = struct.unpack_from("<H", data, offset + 6)[0]
            offset += 8 + length
    return offset


def _read_meta(path: Path) -> Dataset:
    with warnings.catch_warnings():
        # Each problem is reported by the checks below, not as a warning.
        warnings.simplefilter("ignore")
        try:
            return read_file_meta_info(path)
        except (InvalidDicomError, OSError, ValueError, struct.error) as error:
            logger.info("Could not read the file meta information of %s: %s", path, error)
            return Dataset()


def _read_dataset(path: Path, data: bytes, start: int, inspection: Inspection) -> Dataset:
    """Read the dataset with the detected encoding, whatever the meta information names."""
    encoding = inspection.encoding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if encoding is None:
            # Deflated: pydicom inflates the dataset itself.
            return dcmread(path, force=True, stop_before_pixels=True)
        return read_dataset(
            io.BytesIO(data[start:]),
            encoding.implicit_vr,
            encoding.little_endian,
            stop_when=_at_pixel_data,
        )


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) >= _PIXEL_DATA


def _check_meta(inspection: Inspection) -> None:
    meta = inspection.meta
    dataset = inspection.dataset
    if not inspection.has_meta:
        inspection.meta_problems.append(
            "The file has no file meta information (no 128-byte preamble, 'DICM' "
            "prefix and group 0002), so it is a bare dataset rather than a "
            "DICOM Part 10 file."
        )
        return

    if inspection.syntax_mismatch and inspection.encoding is not None:
        inspection.meta_problems.append(
            f"TransferSyntaxUID (0002,0010) is {inspection.declared_syntax}, but the "
            f"dataset is encoded as {inspection.encoding.transfer_syntax}."
        )

    pairs = (
        ("MediaStorageSOPClassUID", "(0002,0002)", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "(0002,0003)", "SOPInstanceUID"),
    )
    for meta_keyword, tag, keyword in pairs:
        meta_value = element_text(meta, meta_keyword)
        value = element_text(dataset, keyword)
        if meta_value != value:
            inspection.meta_problems.append(
                f"{meta_keyword} {tag} is {meta_value or 'missing'!r} but the "
                f"dataset's {keyword} is {value or 'missing'!r}; PS3.10 requires "
                "them to be equal."
            )


def _check_attributes(inspection: Inspection) -> None:
    dataset = inspection.dataset
    inspection.missing_uids = [
        keyword for keyword in REQUIRED_UIDS if not element_text(dataset, keyword)
    ]

    keywords = list(TYPE2_KEYWORDS)
    if _has_pixel_data(inspection):
        keywords += IMAGE_TYPE2_KEYWORDS
    inspection.missing_type2 = [keyword for keyword in keywords if keyword not in dataset]


def _has_pixel_data(inspection: Inspection) -> bool:
    # The dataset was read up to Pixel Data, so its Image Pixel module shows
    # whether the file is an image.
    return "Rows" in inspection.dataset and "Columns" in inspection.dataset


def _dcmtk_reason(error: dcmtk.DcmtkError) -> str:
    lines = [line.strip() for line in error.stderr.splitlines() if line.strip()]
    return " ".join(lines[-3:]) or error.message
