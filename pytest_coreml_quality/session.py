"""One object per pytest run: the settings, the opened models, the cache directory.

It knows nothing of pytest: the plugin creates it in ``pytest_configure`` and keeps it
in ``config.stash``; fixtures and generated items ask it for what they need.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from pytest_coreml_quality.errors import CoreMLQualityError
from pytest_coreml_quality.model import Model
from pytest_coreml_quality.settings import Settings


def effective_backend(requested: str) -> str:
    """What ``auto`` means on this machine: Core ML on macOS, the onnx translation elsewhere."""
    if requested != "auto":
        return requested
    return "coreml" if sys.platform == "darwin" else "onnx"


@dataclass
class QualitySession:
    """Run-wide state: validated settings and the models they name."""

    settings: Settings
    cache_dir: Path
    models: list[Model] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings, default_cache_dir: Path) -> "QualitySession":
        """Open every model named in ``settings``; raise the first model error, naming the path."""
        cache_dir = settings.cache_dir or default_cache_dir
        session = cls(settings=settings, cache_dir=cache_dir)
        problems: list[str] = []
        for path in settings.models:
            try:
                session.models.append(Model.open(path))
            except CoreMLQualityError as exc:
                problems.append(str(exc))
        if problems:
            raise CoreMLQualityError("--coreml-model: " + "; ".join(problems))
        return session

    @property
    def backend_name(self) -> str:
        return effective_backend(self.settings.backend)

    def header_lines(self) -> list[str]:
        """Lines for pytest's report header."""
        if not self.models:
            return []
        backend = self.settings.backend
        shown = f"{backend} ({self.backend_name})" if backend == "auto" else backend
        lines = [f"coreml-quality: backend {shown}, precision {self.settings.precision}, cache {self.cache_dir}"]
        lines += [f"coreml-quality: model {m.summary()}" for m in self.models]
        if self.settings.dataset is not None:
            lines.append(f"coreml-quality: dataset {self.settings.dataset}")
        if self.settings.variants:
            lines.append(f"coreml-quality: variants {', '.join(self.settings.variants)}")
        return lines
