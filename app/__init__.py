"""HTTP service that writes DICOM instances and modality worklists with DCMTK."""

__version__ = "0.1.0"

from .factory import create_app

__all__ = ["__version__", "create_app"]
