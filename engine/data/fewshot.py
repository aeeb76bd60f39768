"""Few-shot subsets with a JSON cache (Dassl's sampling rule, cached per dataset, shots and seed).

``load_or_create_fewshot`` mirrors the CoOp dataset code: the cache
``<dataset_dir>/split_fewshot/shot_{K}-seed_{S}.json`` holds ``{"train": rows, "val": rows}`` in the split
schema (paths relative to ``path_prefix``, like the split file; ImageNet: only ``train``). When it exists
it is read and no random numbers are drawn (same as Dassl). When only the official
``shot_{K}-seed_{S}.pkl`` exists, it is imported through the restricted unpickler of
``engine.data.legacy_fewshot`` (Dassl's ``Datum`` and builtin containers only; its items must be
images of the current split with the same labels), the JSON is written and the import logged; no
random numbers are drawn either. Otherwise train is sampled with ``random.sample`` (K per label) then
val with ``min(K, 4)``, continuing the same global RNG stream. ``convert_fewshot_folder`` imports every
official pickle of a ``split_fewshot`` folder (``tools/convert_fewshot.py``).

The cache also records what it was sampled from, under ``"dataset"``: ``{"classes": [class names by
label], "images": {"train": N, "val": M}, "digest": <SHA-256 of the sorted rows of the full train (and
val) set, paths relative to path_prefix>}``. A cache made from other data (a second CSV in the same
folder, a class folder added to an ImageFolder, an edited split file) is not used: one warning names it
and what differs, and it is resampled (or re-imported from the official pickle) and rewritten. A cache
without that record (written before it existed, or by ``tools/convert_fewshot.py`` of an older version)
is used when its content fits the current data (every item an image of the current train / val set
with the same label and class name, and every current class present); otherwise it is resampled the
same way.
"""
import hashlib
import os
import re

from engine.utils.io import atomic_write_text
from engine.utils.logger import get_logger

from .legacy_fewshot import import_dassl_pickle, known_paths, rows_as_datums
from .sampling import generate_fewshot_dataset
from .splits import dump_json_text, items_to_rows, load_json_file, rows_to_items

LEGACY_NAME = re.compile(r"^shot_(\d+)-seed_(-?\d+)\.pkl$")


def fewshot_cache_path(dataset_dir, num_shots, seed):
    """``<dataset_dir>/split_fewshot/shot_{K}-seed_{S}.json`` (S printed as an int, -1 when unseeded)."""
    return os.path.join(dataset_dir, "split_fewshot", f"shot_{int(num_shots)}-seed_{int(seed)}.json")


IDENTITY_KEY = "dataset"


def dataset_identity(path_prefix, train, val, with_val=True):
    """What a few-shot subset is sampled from: class names by label, image counts and a digest of the
    sorted ``relpath<TAB>label<TAB>classname`` lines of ``train`` (and ``val``; paths relative to
    ``path_prefix``, so a moved dataset folder keeps its caches)."""
    prefix = os.path.join(path_prefix, "")
    cut = len(prefix)

    def line(item):
        path = item.impath
        rel = path[cut:].replace(os.sep, "/") if path.startswith(prefix) else path
        return f"{rel}\t{int(item.label)}\t{item.classname}"

    classes, digest, images = {}, hashlib.sha256(), {}
    for key, items in (("train", train), ("val", val)) if with_val else (("train", train),):
        for item in items:
            if item.label not in classes:
                classes[int(item.label)] = item.classname
        digest.update(f"[{key}]\n".encode("utf-8"))
        digest.update("\n".join(sorted(map(line, items))).encode("utf-8"))
        images[key] = len(items)
    return {"classes": [classes[k] for k in sorted(classes)], "images": images, "digest": digest.hexdigest()[:16]}


def _names(classes, limit=4):
    shown = ", ".join(map(str, classes[:limit]))
    return f"[{shown}{', ...' if len(classes) > limit else ''}] ({len(classes)})"


def _identity_difference(recorded, current):
    """'' when ``recorded`` (a cache's ``dataset`` entry) equals ``current``, else what differs."""
    if recorded == current:
        return ""
    if not isinstance(recorded, dict):
        return "its dataset record is unreadable"
    if recorded.get("classes") != current["classes"]:
        old = recorded.get("classes") if isinstance(recorded.get("classes"), list) else []
        return f"classes {_names(old)} then, {_names(current['classes'])} now"
    if recorded.get("images") != current["images"]:
        return f"images {recorded.get('images')} then, {current['images']} now"
    return "the same classes and counts, other images or labels"


def _content_difference(cached, current, what, prefix):
    """For a cache without a dataset record: '' when every cached item is an item of ``current`` (same
    path, label and class name) and every current label is present, else what does not fit."""
    known = {(os.path.normpath(d.impath), int(d.label), d.classname) for d in current}
    for d in cached:
        if (os.path.normpath(d.impath), int(d.label), d.classname) not in known:
            return f"its {what} item {os.path.relpath(d.impath, prefix)} (label {d.label}) is not in the current {what} set"
    missing = {int(d.label) for d in current} - {int(d.label) for d in cached}
    if missing:
        names = sorted({d.classname for d in current if int(d.label) in missing})
        return f"it has no {what} image of {len(missing)} current classes ({', '.join(names[:4])})"
    return ""


def _write_cache(path, obj, log):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, dump_json_text(obj))
        return True
    except OSError as e:
        log.warning(f"could not write the few-shot cache {path} ({e}); continuing without it")
        return False


def import_fewshot_pickle(pkl_path, json_path, path_prefix, train, val, with_val=True):
    """Import an official ``shot_K-seed_S.pkl`` into ``json_path``; returns ``(train, val)`` subsets.

    Items must be images of ``train`` (resp. ``val``) with the same labels; ``DatasetError`` otherwise
    (nothing is written).
    """
    keys = ("train", "val") if with_val else ("train",)
    known = {"train": known_paths(train, path_prefix)}
    if with_val:
        known["val"] = known_paths(val, path_prefix)
    rows = import_dassl_pickle(pkl_path, keys, known)
    log = get_logger()
    obj = {k: rows[k] for k in keys}
    obj[IDENTITY_KEY] = dataset_identity(path_prefix, train, val, with_val)
    if _write_cache(json_path, obj, log):
        log.info(f"Imported the official few-shot file {pkl_path} into {json_path} "
                 "(the same subsets as the official run)")
    return rows_as_datums(rows["train"], path_prefix), (rows_as_datums(rows["val"], path_prefix) if with_val else val)


def _log_short_classes(train, num_shots, log):
    """One line when some classes have fewer than ``num_shots`` training images (Dassl then uses all of them)."""
    counts = {}
    for item in train:
        counts[item.label] = counts.get(item.label, 0) + 1
    short = {label: n for label, n in counts.items() if n < num_shots}
    if short:
        fewest = min(short.values())
        log.info(f"DATASET.NUM_SHOTS {num_shots}: {len(short)} of {len(counts)} classes have fewer training images "
                 f"(fewest: {fewest}); those use all their images, so the subset has "
                 f"{sum(min(n, num_shots) for n in counts.values()):,} images, not {num_shots * len(counts):,}")


def _read_cache(path, path_prefix, with_val, identity, train, val):
    """``(train, val)`` of the cache at ``path`` when it was made from this data, else None (after one
    warning saying what differs); a malformed cache is a one-line error naming it."""
    data = load_json_file(path, "few-shot cache")
    keys = ("train", "val") if with_val else ("train",)
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise ValueError(f"few-shot cache {path} must be a JSON object with keys {list(keys)}; delete it to resample")
    subset = [rows_to_items(data[k], path_prefix, path, k) for k in keys]
    if IDENTITY_KEY in data:
        problem = _identity_difference(data[IDENTITY_KEY], identity)
    else:  # written before caches recorded their dataset: judged by its content
        problem = _content_difference(subset[0], train, "train", path_prefix)
        if not problem and with_val:
            problem = _content_difference(subset[1], val, "val", path_prefix)
    if problem:
        get_logger().warning(f"The few-shot cache {path} was made from other data than this run's ({problem}); "
                             "making it again from the current data")
        return None
    return subset if with_val else (subset[0], None)


def load_or_create_fewshot(dataset_dir, path_prefix, train, val, num_shots, seed, with_val=True):
    """Return ``(train, val)`` K-shot subsets; ``num_shots < 1`` returns the inputs unchanged.

    ``with_val=False`` (ImageNet) samples and caches only ``train``; ``val`` is returned unchanged.
    """
    log = get_logger()
    if num_shots < 1:
        log.info(f"DATASET.NUM_SHOTS {num_shots}: no few-shot subset, training on all {len(train):,} training images")
        return train, val
    _log_short_classes(train, num_shots, log)
    path = fewshot_cache_path(dataset_dir, num_shots, seed)
    legacy = path[:-len(".json")] + ".pkl"
    identity = dataset_identity(path_prefix, train, val, with_val)
    if os.path.isfile(path):
        cached = _read_cache(path, path_prefix, with_val, identity, train, val)
        if cached is not None:
            log.info(f"Loading preprocessed few-shot data from {path}")
            return cached[0], (cached[1] if with_val else val)
    if os.path.isfile(legacy):
        return import_fewshot_pickle(legacy, path, path_prefix, train, val, with_val)
    train = generate_fewshot_dataset(train, num_shots=num_shots)
    obj = {"train": items_to_rows(train, path_prefix, path)}
    if with_val:
        val = generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
        obj["val"] = items_to_rows(val, path_prefix, path)
    obj[IDENTITY_KEY] = identity
    log.info(f"Saving preprocessed few-shot data to {path}")
    _write_cache(path, obj, log)
    return train, val


def convert_fewshot_folder(dataset_dir, path_prefix, train, val, with_val=True, overwrite=False):
    """Import every ``split_fewshot/shot_K-seed_S.pkl`` of ``dataset_dir`` that has no JSON yet.

    Returns ``[(pkl path, json path, status)]`` with status ``"imported"``, ``"exists"`` or the error
    line (``DatasetError``/``ValueError``); a failed file leaves no JSON behind.
    """
    folder = os.path.join(dataset_dir, "split_fewshot")
    results = []
    if not os.path.isdir(folder):
        return results
    for name in sorted(os.listdir(folder)):
        match = LEGACY_NAME.match(name)
        if not match:
            continue
        pkl = os.path.join(folder, name)
        out = fewshot_cache_path(dataset_dir, int(match.group(1)), int(match.group(2)))
        if os.path.isfile(out) and not overwrite:
            results.append((pkl, out, "exists"))
            continue
        try:
            import_fewshot_pickle(pkl, out, path_prefix, train, val, with_val)
            written = os.path.isfile(out)
            results.append((pkl, out, "imported" if written else f"{out}: could not be written"))
        except ValueError as err:
            results.append((pkl, out, str(err)))
    return results
