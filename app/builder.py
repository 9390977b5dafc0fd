"""Creation of image instances: request data to dump text to a DICOM file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import template_dictionary
from .dump import DumpRenderer, MultiValue, convert
from .modalities import Modality, load_table
from .storage import FileStore
from .uids import generate_uid

logger = logging.getLogger(__name__)

IMAGE_TEMPLATE = "image.dump.j2"

# Modality (0008,0060) of an instance whose request names none: OT, "other".
DEFAULT_MODALITY = "OT"
IMAGE_SIZE = 16
MANUFACTURER = "dicom-service"

# Request fields and the element keyword each one fills.
FIELD_KEYWORDS = {
    "patientID": "PatientID",
    "patientName": "PatientName",
    "patientBirthDate": "PatientBirthDate",
    "patientSex": "PatientSex",
    "studyDescription": "StudyDescription",
    "seriesDescription": "SeriesDescription",
    "modality": "Modality",
    "accessionNumber": "AccessionNumber",
    "institutionName": "InstitutionName",
    "referringPhysicianName": "ReferringPhysicianName",
    "performingPhysicianName": "PerformingPhysicianName",
    "studyDate": "StudyDate",
    "studyTime": "StudyTime",
    "studyID": "StudyID",
    "seriesNumber": "SeriesNumber",
    "instanceNumber": "InstanceNumber",
    "stationName": "StationName",
    "bodyPartExamined": "BodyPartExamined",
    "laterality": "Laterality",
    "studyInstanceUID": "StudyInstanceUID",
    "seriesInstanceUID": "SeriesInstanceUID",
}


@dataclass
class CreatedInstance:
    """A new instance file and the UIDs written into it."""

    path: Path
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    specific_character_set: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "filename": self.path.name,
            "filepath": str(self.path),
            "uids": {
                "studyInstanceUID": self.study_instance_uid,
                "seriesInstanceUID": self.series_instance_uid,
                "sopInstanceUID": self.sop_instance_uid,
            },
            "sopClassUID": self.sop_class_uid,
            "specificCharacterSet": self.specific_character_set,
        }


class InstanceBuilder:
    """Writes image instances into a :class:`FileStore` with ``dump2dcm``."""

    def __init__(
        self, store: FileStore, renderer: DumpRenderer, uid_root: str, timeout: float
    ) -> None:
        self.store = store
        self.renderer = renderer
        self.uid_root = uid_root
        self.timeout = timeout
        # Built at start-up, because a dump2dcm run with this small dictionary
        # takes about a quarter of the time of one with DCMTK's full dictionary.
        self.dictionary = template_dictionary.build()

    def create(self, body: dict[str, Any]) -> CreatedInstance:
        """Write one instance from a validated request body and return it."""
        code = body.get("modality") or DEFAULT_MODALITY
        modality = load_table().lookup(code)
        dataset = self.dataset({**body, "modality": code}, modality)
        dump, charset = self.renderer.render(
            IMAGE_TEMPLATE, {"ds": dataset, "iod_template": modality.iod_template}
        )

        temporary = convert(dump, self.store, self.timeout, self.dictionary)
        final = self.store.publish(temporary)

        logger.info(
            "Wrote %s (%s, SOP Instance UID %s)",
            final.name, modality.sop_class_name, dataset["SOPInstanceUID"],
        )  # fmt: skip
        return CreatedInstance(
            path=final,
            study_instance_uid=dataset["StudyInstanceUID"],
            series_instance_uid=dataset["SeriesInstanceUID"],
            sop_instance_uid=dataset["SOPInstanceUID"],
            sop_class_uid=modality.sop_class_uid,
            specific_character_set=charset,
        )

    def dataset(self, body: dict[str, Any], modality: Modality) -> dict[str, Any]:
        """Map a request body to element keywords and values for the template."""
        now = datetime.now()
        today = now.strftime("%Y%m%d")
        time_now = now.strftime("%H%M%S")

        dataset: dict[str, Any] = {
            "PatientName": "",
            "PatientBirthDate": "",
            "PatientSex": "",
            "StudyDate": today,
            "StudyTime": time_now,
            "ReferringPhysicianName": "",
            "StudyID": "1",
            "AccessionNumber": "",
            "SeriesNumber": 1,
            "InstanceNumber": 1,
            "Manufacturer": MANUFACTURER,
            "ManufacturerModelName": MANUFACTURER,
            "SoftwareVersions": _version(),
            "ContentDate": today,
            "ContentTime": time_now,
            "InstanceCreationDate": today,
            "InstanceCreationTime": time_now,
            "ImageType": MultiValue(modality.image_type),
            "SOPClassUID": modality.sop_class_uid,
            "SOPClassName": modality.sop_class_name,
            "SOPInstanceUID": generate_uid(self.uid_root),
            "FrameOfReferenceUID": generate_uid(self.uid_root),
        }
        for field, keyword in FIELD_KEYWORDS.items():
            if body.get(field) is not None:
                dataset[keyword] = body[field]

        dataset.setdefault("StudyInstanceUID", generate_uid(self.uid_root))
        dataset.setdefault("SeriesInstanceUID", generate_uid(self.uid_root))
        dataset["SeriesDate"] = dataset["StudyDate"]
        dataset["SeriesTime"] = dataset["StudyTime"]
        dataset.update(
            anatomy(dataset.get("BodyPartExamined"), dataset.pop("Laterality", None), modality)
        )
        dataset.update(synthetic_pixels(modality))
        return dataset


def anatomy(
    body_part: str | None, laterality: str | None, modality: Modality
) -> dict[str, Any]:
    """Return the laterality and anatomic region values for ``body_part``.

    IODs with Image Laterality (0020,0062) get the requested laterality, or
    the table's default. The others get Laterality (0020,0060), type 2C in
    the General Series module (PS3.3 C.7.3.1): the requested R or L, else
    written empty unless the body part is known to be unpaired.
    """
    table = load_table()
    values: dict[str, Any] = {
        "AnatomicRegion": table.anatomic_regions.get(body_part or ""),
        "LateralityRequired": False,
    }
    if modality.image_laterality is not None:
        values["ImageLaterality"] = laterality or modality.image_laterality
    elif laterality in ("R", "L"):
        values["Laterality"] = laterality
    else:
        values["LateralityRequired"] = body_part not in table.unpaired_body_parts
    return values


def synthetic_pixels(modality: Modality) -> dict[str, Any]:
    """Return the Image Pixel module values of a small gradient image."""
    bits = modality.bits_allocated
    maximum = (1 << modality.bits_stored) - 1
    size = IMAGE_SIZE
    values = [
        (row * size + column) * maximum // (size * size - 1)
        for row in range(size)
        for column in range(size)
    ]

    if bits == 8:
        words = [f"{value:02x}" for value in values]
    else:
        words = [f"{value:04x}" for value in values]

    return {
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": modality.photometric_interpretation,
        "Rows": size,
        "Columns": size,
        "BitsAllocated": bits,
        "BitsStored": modality.bits_stored,
        "HighBit": modality.bits_stored - 1,
        "PixelRepresentation": 0,
        "PixelData": MultiValue(words),
    }


def _version() -> str:
    from . import __version__

    return __version__
