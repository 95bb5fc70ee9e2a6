"""UTKFace aligned-and-cropped faces; labels from file names ``age_gender_race_date.jpg.chip.jpg``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cotrain.data.base import DatasetSplits
from cotrain.data.readers.common import images_to_tensor, make_splits, stratified_split, subsample
from cotrain.data.readers.imagefiles import load_image_files
from cotrain.data.registry import not_found, register_dataset

log = logging.getLogger(__name__)

RACES = ["white", "black", "asian", "indian", "others"]
GENDERS = ["male", "female"]
AGE_EDGES = (20, 40, 60)
AGE_GROUPS = ["0-19", "20-39", "40-59", "60+"]
TASKS = ("race", "age_group", "gender")


def parse_name(name: str) -> dict[str, int] | None:
    """``"25_1_3_2017....jpg.chip.jpg"`` -> {age, gender, race, age_group}; None when a field is
    missing or out of range (a known UTKFace quirk)."""
    fields = name.split(".", 1)[0].split("_")
    if len(fields) < 4 or not all(f.isdigit() for f in fields[:3]):
        return None
    age, gender, race = (int(f) for f in fields[:3])
    if gender > 1 or race > 4:
        return None
    return {"age": age, "gender": gender, "race": race, "age_group": age_group(age)}


def age_group(age: int) -> int:
    """Age bin index: 0-19 -> 0, 20-39 -> 1, 40-59 -> 2, 60+ -> 3."""
    return int(np.searchsorted(AGE_EDGES, age, side="right"))


def image_dir(root: Path) -> Path:
    """The folder with the JPEGs: ``root/crop_part1`` when present, else ``root``."""
    sub = root / "crop_part1"
    return sub if sub.is_dir() else root


def scan(root: Path) -> tuple[list[Path], dict[str, np.ndarray], int]:
    """Sorted parseable files, their label arrays (N,) and the count of skipped files."""
    paths, rows, skipped = [], [], 0
    for p in sorted(image_dir(root).glob("*.jpg")):
        row = parse_name(p.name)
        if row is None:
            skipped += 1
            continue
        paths.append(p)
        rows.append(row)
    if not paths:
        raise not_found(image_dir(root) / "<age>_<gender>_<race>_<date>.jpg.chip.jpg", "UTKFace images")
    labels = {k: np.asarray([r[k] for r in rows], dtype=np.int64) for k in rows[0]}
    return paths, labels, skipped


def _sizes(root: Path) -> tuple[int, int]:
    _, labels, _ = scan(root)
    train, test = stratified_split(labels["race"], 0.2, 0, "utkface")
    return len(train), len(test)


@register_dataset(
    "utkface",
    folder="utkface_crop_part1",
    how_to_get="put UTKFace *.jpg.chip.jpg files in <data dir>/utkface_crop_part1/crop_part1",
    sizes=_sizes,
    description="UTKFace faces (crop_part1) with gender/race/age attributes, 3x32x32",
)
def load_utkface(
    root: Path,
    *,
    task: str = "race",
    size: int = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_samples: int | None = None,
    cache: bool = True,
) -> DatasetSplits:
    """UTKFace: x float32 (N, 3, size, size) in [0, 1]; label ``task``: race (5), age_group
    (4: 0-19, 20-39, 40-59, 60+) or gender (2). Attributes (int64 (N,)): gender, race,
    age_group, without the task itself. Files whose name lacks a field are skipped (count
    logged). Split stratified by label, deterministic from ``seed``. Decoded images are cached
    (see :mod:`cotrain.data.readers.cache`) unless ``cache=False``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown utkface task {task!r}; known: {', '.join(TASKS)}")
    paths, labels, skipped = scan(root)
    if skipped:
        log.info("utkface: skipped %d files whose names lack a field", skipped)
    keep = subsample(len(paths), max_samples, seed, "utkface")
    paths = [paths[i] for i in keep]
    images = load_image_files("utkface", paths, size, cache=cache)
    attrs = {k: labels[k][keep] for k in ("gender", "race", "age_group")}
    y = attrs.pop(task)
    train, test = stratified_split(y, test_fraction, seed, "utkface")
    names = {"race": RACES, "gender": GENDERS, "age_group": AGE_GROUPS}
    return make_splits(
        "utkface", images_to_tensor(images), y, train, test, attributes=attrs,
        num_classes=len(names[task]), class_names=names[task],
        attribute_values={k: names[k] for k in attrs},
    )
