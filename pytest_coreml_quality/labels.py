"""Optional class labels of a golden set: ``labels.csv`` (columns ``image``, ``label``) next to ``images/``.

An image is named by its sample id (the file stem, or the manifest path without
extension), its file name, or its path relative to the golden set. Every image must
have exactly one label; every problem is reported at once.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_coreml_quality.dataset import Dataset
from pytest_coreml_quality.errors import DatasetError

LABELS_NAME = "labels.csv"


def labels_path(dataset: Dataset) -> Path | None:
    """The golden set's ``labels.csv``, if it has one."""
    path = dataset.root / LABELS_NAME
    return path if path.is_file() else None


def read_labels(dataset: Dataset) -> dict[str, str] | None:
    """Sample id -> true class label, or None without ``labels.csv``; raises :class:`DatasetError`.

    A shard (:meth:`.Dataset.shard`) checks the file against the whole golden set, as a
    single job would, and keeps its own images' labels.
    """
    if dataset.whole is not None:
        labels = read_labels(dataset.whole)
        return None if labels is None else {sid: labels[sid] for sid in dataset.ids}
    path = labels_path(dataset)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot be read ({exc})", path=path) from None
    reader = csv.DictReader(text.splitlines())
    fields = [(f or "").strip().lower() for f in reader.fieldnames or []]
    if "image" not in fields or "label" not in fields:
        raise DatasetError("the header needs columns image and label", path=path, expected="image,label")
    names: dict[str, str] = {}
    for entry in dataset.entries:
        for name in (entry.id, entry.image_path.name, _relative(entry.image_path, dataset.root)):
            names.setdefault(name, entry.id)
    labels: dict[str, str] = {}
    problems: list[str] = []
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        image, label = row.get("image", ""), row.get("label", "")
        sample = names.get(image)
        if sample is None:
            problems.append(f"line {number}: field 'image': '{image}' is not an image of the golden set")
        elif not label:
            problems.append(f"line {number}: field 'label' is empty for '{image}'")
        elif sample in labels:
            problems.append(f"line {number}: '{image}' is labelled twice")
        else:
            labels[sample] = label
    unlabelled = [e.id for e in dataset.entries if e.id not in labels]
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else "")
        problems.append(f"no label for {shown}")
    if problems:
        raise DatasetError("; ".join(problems), path=path, expected="one 'image,label' row per golden-set image")
    return labels


def check_labels(labels: dict[str, str], classes: Sequence[Any], path: Path, model: str) -> str:
    """Check ``labels`` (sample id -> label) against the classifier's ``classes``.

    Labels are compared with the classes as text (``"3"`` is class ``3``). When no label is
    a class of the model, every accuracy would be a silent 0 (names written for a model whose
    classes are integers, or another model's label set): a :class:`DatasetError`. When only
    some are not, those images count as misses and the returned note names them ("" if none).
    """
    known = {str(c) for c in classes}
    unknown: dict[str, list[str]] = {}
    for sample, label in labels.items():
        if label not in known:
            unknown.setdefault(label, []).append(sample)
    if not unknown:
        return ""
    listed = "; ".join(f"'{label}' ({_few(samples, 5)})" for label, samples in list(unknown.items())[:5])
    if len(unknown) > 5:
        listed += f"; and {len(unknown) - 5} more"
    if len(unknown) == len(set(labels.values())):
        raise DatasetError(
            f"no label is a class of {model}: {listed}", path=path, field="label",
            expected=f"labels among the model's {len(classes)} classes: {_few([str(c) for c in classes], 8)}",
        )
    count = f"{len(unknown)} label{'s' if len(unknown) > 1 else ''} of {LABELS_NAME} {'are' if len(unknown) > 1 else 'is'}"
    return f"{count} not a class of the model: {listed}; those images count as misses"


def _few(items: Sequence[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
