"""Few-shot subsets with a JSON cache (compat note §2.4, issue 3 item 3).

``load_or_create_fewshot`` mirrors the CoOp dataset code: the cache
``<dataset_dir>/split_fewshot/shot_{K}-seed_{S}.json`` holds ``{"train": rows, "val": rows}`` in the split
schema (paths relative to ``path_prefix``, like the split file; ImageNet: only ``train``). When it exists
it is read and no random numbers are drawn (same as Dassl); otherwise train is sampled with
``random.sample`` (K per label) then val with ``min(K, 4)``, continuing the same global RNG stream.
Legacy ``.pkl`` caches are never unpickled (a crafted pickle runs code); the sampling reproduces them.
"""
import os

from engine.utils.io import atomic_write_text
from engine.utils.logger import get_logger

from .sampling import generate_fewshot_dataset
from .splits import dump_json_text, items_to_rows, load_json_file, rows_to_items


def fewshot_cache_path(dataset_dir, num_shots, seed):
    """``<dataset_dir>/split_fewshot/shot_{K}-seed_{S}.json`` (S printed as an int, -1 when unseeded)."""
    return os.path.join(dataset_dir, "split_fewshot", f"shot_{int(num_shots)}-seed_{int(seed)}.json")


def load_or_create_fewshot(dataset_dir, path_prefix, train, val, num_shots, seed, with_val=True):
    """Return ``(train, val)`` K-shot subsets; ``num_shots < 1`` returns the inputs unchanged.

    ``with_val=False`` (ImageNet) samples and caches only ``train``; ``val`` is returned unchanged.
    """
    if num_shots < 1:
        return train, val
    log = get_logger()
    path = fewshot_cache_path(dataset_dir, num_shots, seed)
    legacy = path[:-len(".json")] + ".pkl"
    if os.path.exists(legacy):
        log.info(f"Ignoring legacy pickle cache {legacy} (never unpickled; the JSON cache reproduces it)")
    if os.path.isfile(path):
        log.info(f"Loading preprocessed few-shot data from {path}")
        data = load_json_file(path, "few-shot cache")
        keys = ("train", "val") if with_val else ("train",)
        if not isinstance(data, dict) or any(k not in data for k in keys):
            raise ValueError(f"few-shot cache {path} must be a JSON object with keys {list(keys)}; delete it to resample")
        train = rows_to_items(data["train"], path_prefix, path, "train")
        if with_val:
            val = rows_to_items(data["val"], path_prefix, path, "val")
        return train, val
    train = generate_fewshot_dataset(train, num_shots=num_shots)
    obj = {"train": items_to_rows(train, path_prefix, path)}
    if with_val:
        val = generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
        obj["val"] = items_to_rows(val, path_prefix, path)
    log.info(f"Saving preprocessed few-shot data to {path}")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, dump_json_text(obj))
    except OSError as e:
        log.warning(f"could not write the few-shot cache {path} ({e}); continuing without it")
    return train, val
