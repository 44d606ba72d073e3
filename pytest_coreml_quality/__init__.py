"""pytest-coreml-quality: quality gates for compressed Core ML models.

The core (model inspection, runtime, variants, dataset, metrics) is plain Python and
knows nothing of pytest; ``plugin`` is the thin glue registered under ``pytest11``.
"""

from pytest_coreml_quality.errors import CoreMLQualityError, ModelFormatError
from pytest_coreml_quality.model import Model

__all__ = ["CoreMLQualityError", "Model", "ModelFormatError", "__version__"]

__version__ = "0.1.0"
