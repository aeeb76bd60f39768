"""Split files in the CoOp schema and deterministic split generation.

Schema: ``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``; ``relpath`` is
relative to ``path_prefix`` (the image folder; StanfordCars: the dataset folder), forward slashes.
Files are written atomically with Dassl's ``write_json`` format (indent 4).

Generation (only with ``DATASET.ALLOW_GENERATED_SPLIT`` True; see ``split_dataset``) uses a
DEDICATED ``random.Random(SPLIT_SEED)`` so creating a missing split never touches
the global ``random`` stream that drives few-shot sampling. Listings are sorted, so a generated split
depends only on the files on disk (it will not equal the released CoOp files).
"""
import json
import os
import random

from engine.utils.io import atomic_write_text
from engine.utils.logger import get_logger

from .base_dataset import DatasetError
from .datum import Datum

SPLIT_SEED = 1  # seed of the private RNG that generates missing split files
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def listdir_sorted(path, dirs_only=False, files_only=False):
    """Sorted non-hidden entries of ``path`` (``DatasetError`` naming it when missing)."""
    if not os.path.isdir(path):
        raise DatasetError(f"folder not found: {path}")
    names = sorted(n for n in os.listdir(path) if not n.startswith("."))
    if dirs_only:
        names = [n for n in names if os.path.isdir(os.path.join(path, n))]
    if files_only:
        names = [n for n in names if os.path.isfile(os.path.join(path, n))]
    return names


def dump_json_text(obj):
    """Dassl's ``write_json`` layout."""
    return json.dumps(obj, indent=4, separators=(",", ": "))


def load_json_file(path, what="JSON file"):
    """Parse ``path``; one-line ``DatasetError`` on a missing or malformed file."""
    if not os.path.isfile(path):
        raise DatasetError(f"{what} not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{what} {path} is not valid JSON ({e})") from None


def items_to_rows(items, path_prefix, filepath=""):
    """``[Datum]`` -> ``[[relpath, label, classname]]`` with ``relpath`` relative to ``path_prefix``
    (an absolute path outside it is kept absolute; ``read_split`` joins it back unchanged, like Dassl)."""
    prefix = os.path.join(path_prefix, "")
    rows = []
    for item in items:
        if item.impath.startswith(prefix):
            rel = item.impath[len(prefix):].replace(os.sep, "/")
        elif os.path.isabs(item.impath):
            rel = item.impath  # outside the image folder (custom CSV rows): kept absolute
        else:
            raise DatasetError(f"cannot write {filepath or 'split'}: {item.impath} is not under {path_prefix}")
        rows.append([rel, int(item.label), item.classname])
    return rows


def rows_to_items(rows, path_prefix, filepath, key):
    """``[[relpath, label, classname]]`` -> ``[Datum]`` joined on ``path_prefix``; validates each row."""
    if not isinstance(rows, list):
        raise DatasetError(f"{filepath}: key {key!r} must be a list of [impath, label, classname]")
    items = []
    for i, row in enumerate(rows):
        if (not isinstance(row, (list, tuple)) or len(row) != 3 or not isinstance(row[0], str)
                or isinstance(row[1], bool) or not isinstance(row[1], (int, str)) or not isinstance(row[2], str)):
            raise DatasetError(f"{filepath}: {key}[{i}] = {row!r}; expected [impath (str), label (int), classname (str)]")
        try:
            label = int(row[1])
        except ValueError:
            raise DatasetError(f"{filepath}: {key}[{i}] has a non-integer label {row[1]!r}") from None
        items.append(Datum(impath=os.path.join(path_prefix, row[0]), label=label, classname=row[2]))
    return items


def read_split(filepath, path_prefix, keys=("train", "val", "test")):
    """Read a CoOp split file; returns one list of ``Datum`` per key, in file order."""
    get_logger().info(f"Reading split from {filepath}")
    data = load_json_file(filepath, "split file")
    if not isinstance(data, dict):
        raise DatasetError(f"{filepath}: expected a JSON object with keys {list(keys)}")
    out = []
    for key in keys:
        if key not in data:
            raise DatasetError(f"{filepath}: missing key {key!r} (expected keys {list(keys)})")
        out.append(rows_to_items(data[key], path_prefix, filepath, key))
    return out


def distinct_images(source, train, val, test):
    """``(train, val, test)`` with each image once: an image listed again in the same split with the same
    label is dropped (one warning counts them); in another split, or with another label, it is a
    one-line ``DatasetError`` naming ``source`` and the image. Paths compare after ``os.path.normpath``."""
    where, out, repeats = {}, [], []
    for key, items in (("train", train), ("val", val), ("test", test)):
        kept = []
        for item in items:
            path = os.path.normpath(item.impath)
            if path in where:
                key0, label0 = where[path]
                if key0 != key:
                    raise DatasetError(f"{source}: image {item.impath} is in both {key0} and {key}; an image must be "
                                       "in one split (it would be tested on what was trained on)")
                if label0 != item.label:
                    raise DatasetError(f"{source}: image {item.impath} has labels {label0} and {item.label} in "
                                       f"{key}; an image has one label")
                repeats.append(item.impath)
                continue
            where[path] = (key, item.label)
            kept.append(item)
        out.append(kept)
    if repeats:
        get_logger().warning(f"{source}: {len(repeats)} entries repeat an image listed earlier in the same split "
                             f"(first: {repeats[0]}); each image is used once")
    return tuple(out)


def save_split(train, val, test, filepath, path_prefix):
    """Write a CoOp split file atomically (paths relative to ``path_prefix``)."""
    obj = {
        "train": items_to_rows(train, path_prefix, filepath),
        "val": items_to_rows(val, path_prefix, filepath),
        "test": items_to_rows(test, path_prefix, filepath),
    }
    atomic_write_text(filepath, dump_json_text(obj))
    get_logger().info(f"Saved split to {filepath}")


def missing_split_message(split_path, hint):
    """One line for a missing published split file (``DATASET.ALLOW_GENERATED_SPLIT`` False)."""
    return (f"split file not found: {split_path}; {hint} (or set DATASET.ALLOW_GENERATED_SPLIT True to "
            "generate one from the raw files: it is NOT the published split, so numbers are not comparable)")


def _split_counts(n, p_trn, p_val):
    n_train = round(n * p_trn)
    n_val = round(n * p_val)
    return n_train, n_val, n - n_train - n_val


def split_groups(groups, p_trn=0.5, p_val=0.2, rng=None):
    """Per class ``(label, classname, impaths, source)``: shuffle with ``rng`` (private), then
    ``round(p_trn*n)`` train, ``round(p_val*n)`` val, the rest test; each must be > 0."""
    rng = rng if rng is not None else random.Random(SPLIT_SEED)
    train, val, test = [], [], []
    for label, cname, paths, source in groups:
        paths = list(paths)
        if not paths:
            raise DatasetError(f"empty class: {source}")
        rng.shuffle(paths)
        n_train, n_val, n_test = _split_counts(len(paths), p_trn, p_val)
        if min(n_train, n_val, n_test) <= 0:
            raise DatasetError(
                f"class {source} has {len(paths)} images: too few for a {p_trn:g}/{p_val:g}/"
                f"{1 - p_trn - p_val:g} train/val/test split (need at least 4 so that each part is > 0)")
        train += [Datum(p, label, 0, cname) for p in paths[:n_train]]
        val += [Datum(p, label, 0, cname) for p in paths[n_train:n_train + n_val]]
        test += [Datum(p, label, 0, cname) for p in paths[n_train + n_val:]]
    return train, val, test


def read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=(), new_cnames=None, rng=None,
                        extensions=None):
    """DTD-style split of class folders: sorted categories minus ``ignored`` (label = index),
    per class the sorted files (optionally only ``extensions``) split by ``split_groups``."""
    categories = [c for c in listdir_sorted(image_dir, dirs_only=True) if c not in set(ignored)]
    if not categories:
        raise DatasetError(f"no class folders found in {image_dir}")
    groups = []
    for label, category in enumerate(categories):
        category_dir = os.path.join(image_dir, category)
        names = listdir_sorted(category_dir, files_only=True)
        if extensions is not None:
            names = [n for n in names if n.lower().endswith(tuple(extensions))]
        cname = new_cnames.get(category, category) if new_cnames else category
        groups.append((label, cname, [os.path.join(category_dir, n) for n in names], f"folder {category_dir}"))
    return split_groups(groups, p_trn, p_val, rng)


def split_trainval(trainval, p_val=0.2, rng=None, source=""):
    """OxfordPets.split_trainval: per label in first-appearance order, shuffle, first
    ``round(p_val*n)`` go to val, the rest to train."""
    rng = rng if rng is not None else random.Random(SPLIT_SEED)
    tracker = {}
    for idx, item in enumerate(trainval):
        tracker.setdefault(item.label, []).append(idx)
    train, val = [], []
    for label, idxs in tracker.items():
        n_val = round(len(idxs) * p_val)
        if n_val <= 0 or n_val >= len(idxs):
            raise DatasetError(
                f"{source or 'trainval list'}: label {label} has {len(idxs)} images, too few to hold out "
                f"{p_val:g} for validation")
        rng.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def read_text_lines(path, what="file"):
    """Non-empty, stripped lines of a text file (``DatasetError`` naming it when missing)."""
    if not os.path.isfile(path):
        raise DatasetError(f"{what} not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]
