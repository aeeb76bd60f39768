"""Import the official code's few-shot pickles (``split_fewshot/shot_K-seed_S.pkl``, ImageNet's
``preprocessed.pkl``) into our JSON files, through a RESTRICTED unpickler.

Dassl/CoOp write ``pickle.dump({"train": [Datum, ...], "val": [...]})`` (ImageNet shot files:
``{"train": [...]}``; ``preprocessed.pkl``: ``{"train": [...], "test": [...]}``), where ``Datum`` is
``dassl.data.datasets.base_dataset.Datum`` holding the ABSOLUTE image path of the machine that wrote it.

Safety: :class:`DasslDatumUnpickler` is a ``pickle.Unpickler`` whose ``find_class`` admits exactly
Dassl's ``Datum`` (mapped to the inert :class:`PickledDatum`, which only stores its state dict) and
the builtin containers ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``; every other global
(e.g. ``os.system`` in a ``__reduce__``) raises :class:`ForbiddenGlobal` before anything is called,
and persistent ids are refused. No other callable can be reached from the pickle, so no code of the
file runs. This is the project's only unpickler; model checkpoints go through
``engine.legacy_checkpoint`` (``torch.load(weights_only=True)``).

Paths: the writer's prefix is found by matching the first item's path suffix against the image paths
we know (the current split, or the ImageNet listing); every item must then carry that prefix and name
a known image with the same label, else a one-line ``DatasetError``. Nothing is written on error.
"""
import os
import pickle

from engine.utils.logger import get_logger

from .base_dataset import DatasetError
from .datum import Datum

#: the one class the official few-shot pickles contain (Dassl's module path)
DASSL_DATUM = ("dassl.data.datasets.base_dataset", "Datum")
SAFE_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (``.name`` = ``module.qualname``)."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


class PickledDatum:
    """Inert stand-in for Dassl's ``Datum``: keeps the pickled state dict, runs no code of the original."""

    __slots__ = ("state",)

    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = state


class DasslDatumUnpickler(pickle.Unpickler):
    """Restricted unpickler: only Dassl's ``Datum`` (-> :class:`PickledDatum`) and builtin containers."""

    def find_class(self, module, name):
        if (module, name) == DASSL_DATUM:
            return PickledDatum
        if module in ("builtins", "__builtin__") and name in SAFE_BUILTINS:
            return SAFE_BUILTINS[name]
        raise ForbiddenGlobal(f"{module}.{name}")

    def persistent_load(self, pid):
        raise ForbiddenGlobal(f"persistent id {pid!r}")


def read_dassl_pickle(path):
    """Restricted load of an official few-shot/preprocessed pickle -> ``{key: [PickledDatum]}``.

    One-line ``DatasetError`` naming ``path`` for a forbidden global, a corrupt file or another layout.
    """
    try:
        with open(path, "rb") as f:
            data = DasslDatumUnpickler(f).load()
    except ForbiddenGlobal as err:
        raise DatasetError(f"{path}: refused to unpickle: forbidden global {err.name} (only Dassl's "
                           f"{'.'.join(DASSL_DATUM)} and builtin containers are allowed)") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror or err})") from None
    except Exception as err:  # truncated / corrupt / wrong opcodes
        raise DatasetError(f"{path}: not a readable Dassl pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict of Datum lists, got {type(data).__name__}")
    for key, items in data.items():
        if not isinstance(items, (list, tuple)):
            raise DatasetError(f"{path}: entry {key!r} is a {type(items).__name__}, expected a list of Datum")
        for i, item in enumerate(items):
            if not isinstance(item, PickledDatum) or not isinstance(getattr(item, "state", None), dict):
                raise DatasetError(f"{path}: {key}[{i}] is not a Dassl Datum")
    return data


def _datum_fields(path, key, i, item):
    state = item.state
    impath, label, classname = state.get("_impath"), state.get("_label"), state.get("_classname", "")
    if (not isinstance(impath, str) or isinstance(label, bool) or not isinstance(label, int)
            or not isinstance(classname, str)):
        raise DatasetError(f"{path}: {key}[{i}] has impath={impath!r}, label={label!r}, classname={classname!r}; "
                           "expected str, int, str")
    return impath.replace("\\", "/"), label, classname


def _find_prefix(impath, known):
    """The writer's prefix: ``impath`` minus its longest component suffix that is a known relative path."""
    parts = impath.split("/")
    for start in range(len(parts)):  # longest suffix first
        rel = "/".join(parts[start:])
        if rel in known:
            return impath[:len(impath) - len(rel)]
    return None


def relative_rows(path, key, items, known, prefix=None):
    """``[PickledDatum]`` -> ``([[relpath, label, classname]], prefix)`` against ``known`` {relpath: label}.

    ``prefix`` (the writer's image folder) is detected from the first item when None.
    """
    rows = []
    for i, item in enumerate(items):
        impath, label, classname = _datum_fields(path, key, i, item)
        if prefix is None:
            prefix = _find_prefix(impath, known)
            if prefix is None:
                raise DatasetError(f"{path}: {key}[{i}] {impath} matches no image of the current split/listing")
        if not impath.startswith(prefix):
            raise DatasetError(f"{path}: {key}[{i}] {impath} is not under the file's image folder {prefix}")
        rel = impath[len(prefix):]
        if rel not in known:
            raise DatasetError(f"{path}: {key}[{i}] {rel} is not an image of the current split/listing")
        if known[rel] != label:
            raise DatasetError(f"{path}: {key}[{i}] {rel} has label {label}, the current split says {known[rel]}")
        rows.append([rel, label, classname])
    return rows, prefix


def known_paths(items, path_prefix):
    """``{relpath: label}`` of ``[Datum]`` relative to ``path_prefix`` (forward slashes)."""
    prefix = os.path.join(path_prefix, "")
    return {d.impath[len(prefix):].replace(os.sep, "/") if d.impath.startswith(prefix) else d.impath: d.label
            for d in items}


def import_dassl_pickle(path, keys, known_by_key, required=None):
    """Read ``path`` and return ``{key: rows}`` for ``keys`` (each must be present when in ``required``).

    ``known_by_key[key]`` = ``{relpath: label}`` the rows must come from.
    """
    data = read_dassl_pickle(path)
    required = keys if required is None else required
    missing = [k for k in required if k not in data]
    if missing:
        raise DatasetError(f"{path}: missing entry {missing[0]!r} (has {sorted(map(str, data))})")
    out, prefix = {}, None
    for key in keys:
        if key in data:
            out[key], prefix = relative_rows(path, key, data[key], known_by_key[key], prefix)
    get_logger().info(f"Imported the official pickle {path} ({', '.join(f'{k}: {len(v)}' for k, v in out.items())} "
                      f"items; image folder there: {prefix})")
    return out


def rows_as_datums(rows, path_prefix):
    """``[[relpath, label, classname]]`` -> ``[Datum]`` joined on ``path_prefix``."""
    return [Datum(os.path.join(path_prefix, rel), label, 0, cname) for rel, label, cname in rows]
