"""The table of supported modalities, read from ``templates_dump/modalities.json``.

Each entry names the SOP Class that instances of that modality are written
as, the IOD template under ``templates_dump/iods/`` and the parameters of
the synthetic image. The schemas, the templates and ``GET
/api/dicom/modalities`` all read this one table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

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


@dataclass(frozen=True)
class ModalityTable:
    """The modalities with an IOD of their own, and those written as Secondary Capture."""

    modalities: dict[str, Modality]
    secondary_capture: tuple[str, ...]
    default: str

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
        )
        for code, entry in raw["modalities"].items()
    }
    return ModalityTable(
        modalities=modalities,
        secondary_capture=tuple(raw["secondaryCapture"]["modalities"]),
        default=raw["default"],
    )
