"""Find released (official) checkpoints in the MaPLe/COMMA release layout.

The official ``reproduce_maple.sh`` / ``reproduce_comma.sh DATASET SEED WEIGHTSPATH`` load
``${WEIGHTSPATH}/base/seed${SEED}`` at the config's last epoch, where ``WEIGHTSPATH`` is one dataset's
unzipped release folder. A folder of several datasets therefore reads::

    <weights>/<dataset>/base/seed<N>/<model name>/model.pth.tar-<epoch>     e.g. MultiModalPromptLearner/model.pth.tar-5

``<dataset>`` is the dataset's config name (``caltech101``) or its table title (``Caltech101``,
``Flowers102``), in any case. ``<weights>/base/seed<N>`` (one dataset's folder itself) is accepted
too when exactly one dataset is named. Bad input raises :class:`repro.errors.PlanError` with
one line naming the folder and the expected layout.
"""
from __future__ import annotations

import os
import re

from repro.errors import PlanError
from repro.methods import BASE2NEW_DATASETS, DATASET_TITLES

LAYOUT = "<weights>/<dataset>/base/seed<N>/<model name>/model.pth.tar-<epoch> (the MaPLe/COMMA release layout)"
_SEED = re.compile(r"^seed(\d+)$")


def _error(msg: str):
    return PlanError(msg)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def dataset_of(folder: str) -> str:
    """Config name of a release folder name (``Flowers102`` -> ``oxford_flowers``); unknown names lower-cased."""
    n = _norm(folder)
    for stem, title in DATASET_TITLES.items():
        if n in (_norm(stem), _norm(title)):
            return stem
    return folder.lower()


def _seeds(base_dir: str) -> list:
    try:
        names = os.listdir(base_dir)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(_SEED.match, names)
                  if m and os.path.isdir(os.path.join(base_dir, m.group(0))))


def _check_root(weights) -> str:
    if not weights:
        raise _error("the released protocol needs --weights DIR (a folder of official checkpoints: " + LAYOUT + ")")
    if not os.path.isdir(weights):
        raise _error(f"released weights folder not found: {weights} (expected {LAYOUT})")
    return weights


def _dataset_folders(weights: str) -> dict:
    """``{dataset: folder}`` for every sub-folder holding ``base/seed<N>``."""
    found = {}
    for name in sorted(os.listdir(weights)):
        base = os.path.join(weights, name, "base")
        if os.path.isdir(base) and _seeds(base):
            found.setdefault(dataset_of(name), os.path.join(weights, name))
    return found


def weights_for(weights: str, dataset: str, seed) -> str:
    """The model folder (``.../base/seed<N>``) of ``dataset`` and ``seed`` under ``weights`` (it may
    not exist: the job then reports the missing checkpoint)."""
    weights = _check_root(weights)
    folders = _dataset_folders(weights)
    if dataset in folders:
        return os.path.join(folders[dataset], "base", f"seed{seed}")
    if os.path.isdir(os.path.join(weights, "base")):
        return os.path.join(weights, "base", f"seed{seed}")
    return os.path.join(weights, dataset, "base", f"seed{seed}")


def discover(weights: str, datasets=None, seeds=None) -> list:
    """``[(dataset, seed)]`` to evaluate: every dataset folder and seed found (papers' dataset order,
    then by name), restricted to ``datasets`` / ``seeds`` when given. A named dataset without a folder,
    or nothing found at all, is a one-line ``PlanError``."""
    weights = _check_root(weights)
    folders = _dataset_folders(weights)
    single = _seeds(os.path.join(weights, "base"))
    if single and not folders:
        if not datasets or len(datasets) != 1:
            raise _error(f"{weights} holds one dataset's weights ({weights}/base/seed<N>); name that dataset "
                         "with --datasets DATASET")
        folders = {datasets[0]: weights}
    if not folders:
        raise _error(f"{weights} holds no released weights: expected {LAYOUT}")
    if datasets:
        missing = [d for d in datasets if d not in folders]
        if missing:
            raise _error(f"{weights} has no weights for {', '.join(missing)} (found: {', '.join(folders)}; "
                         f"expected {LAYOUT})")
        names = list(datasets)
    else:
        names = [d for d in BASE2NEW_DATASETS if d in folders] + sorted(d for d in folders
                                                                      if d not in BASE2NEW_DATASETS)
    out = []
    for d in names:
        have = _seeds(os.path.join(folders[d], "base"))
        for s in (sorted(set(seeds)) if seeds else have):
            out.append((d, s))
    return out
