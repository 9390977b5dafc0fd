"""The table of supported modalities, read from ``templates_dump/modalities.json``.

Each entry names the SOP Class that instances of that modality are written
as, the IOD template under ``templates_dump/iods/`` and the parameters of
the synthetic image. The schemas, the templates and ``GET
/api/dicom/modalities`` all read this one table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.sr.codedict import codes

from .dump import template_dir


@dataclass(frozen=True)
class Modality:
    """One supported modality and the SOP Class it is written as."""

    code: str
    sop_class_uid: str
    sop_class_name: str
    iod_template: str
    image_type: tuple[str, ...]
    photometric_interpretation: str
    bits_allocated: int
    bits_stored: int
    # Default Image Laterality (0020,0062) for IODs where it is type 1, else None.
    image_laterality: str | None = None
    # True when the IOD needs an Anatomic Region Sequence item, which is
    # coded from Body Part Examined.
    anatomic_region_required: bool = False


@dataclass(frozen=True)
class CodedConcept:
    """A code of a Code Sequence item (PS3.3 section 8.8)."""

    code_value: str
    coding_scheme_designator: str
    code_meaning: str


@dataclass(frozen=True)
class ModalityTable:
    """The modalities with an IOD of their own, and those written as Secondary Capture."""

    modalities: dict[str, Modality]
    secondary_capture: tuple[str, ...]
    default: str
    unpaired_body_parts: frozenset[str] = frozenset()
    anatomic_regions: dict[str, CodedConcept] = field(default_factory=dict)

    def codes(self) -> list[str]:
        return sorted({*self.modalities, *self.secondary_capture})

    def lookup(self, code: str) -> Modality:
        """Return the entry for ``code``; Secondary Capture codes share its entry."""
        if code in self.modalities:
            return self.modalities[code]
        if code in self.secondary_capture:
            return self.modalities[self.default]
        raise KeyError(code)


@lru_cache(maxsize=1)
def load_table() -> ModalityTable:
    """Read and cache the modality table."""
    with open(template_dir() / "modalities.json", encoding="utf-8") as handle:
        raw = json.load(handle)

    modalities = {
        code: Modality(
            code=code,
            sop_class_uid=entry["sopClassUID"],
            sop_class_name=entry["sopClassName"],
            iod_template=entry["iodTemplate"],
            image_type=tuple(entry["imageType"]),
            photometric_interpretation=entry["photometricInterpretation"],
            bits_allocated=int(entry["bitsAllocated"]),
            bits_stored=int(entry["bitsStored"]),
            image_laterality=entry.get("imageLaterality"),
            anatomic_region_required=bool(entry.get("anatomicRegionRequired", False)),
        )
        for code, entry in raw["modalities"].items()
    }
    return ModalityTable(
        modalities=modalities,
        secondary_capture=tuple(raw["secondaryCapture"]["modalities"]),
        default=raw["default"],
        unpaired_body_parts=frozenset(raw["unpairedBodyParts"]["values"]),
        anatomic_regions={
            body_part: _snomed_concept(name)
            for body_part, name in raw["anatomicRegions"]["codes"].items()
        },
    )


def _snomed_concept(name: str) -> CodedConcept:
    """Return the SNOMED CT concept that pydicom's code dictionary calls ``name``."""
    code = getattr(codes.SCT, name)
    return CodedConcept(code.value, code.scheme_designator, code.meaning)
