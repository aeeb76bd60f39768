"""ImageNet preparation (``tools/prepare_data.py imagenet-val`` / ``imagenet-classnames``).

``sort_val_folder(root, labels, meta=None)``: moves the flat validation images
``<root>/imagenet/images/val/ILSVRC2012_val_XXXXXXXX.JPEG`` into ``<root>/imagenet/images/val/<wnid>/``.
Labels come from the devkit (``ILSVRC2012_validation_ground_truth.txt``: line i = ILSVRC2012_ID of
image i; ``meta.mat`` next to it, or ``meta``, maps ILSVRC2012_ID -> wnid) or from Kaggle's
``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token is the wnid). Every flat image
must have a label and no target may exist before anything moves; each move is one ``os.replace`` in
the same folder tree, so an interrupted run leaves every file either flat or sorted and a re-run
finishes the job.

``write_classnames(root, clip_names=None)``: ``<root>/imagenet/classnames.txt`` = one
``<wnid> <CLIP class name>`` line per sorted wnid folder of ``images/train``; names (class-index order)
from ``clip_names`` (a file) or, when installed, ``open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES``.
"""
import csv
import os
import re

from engine.utils.io import atomic_write_text

from .base_dataset import DatasetError

WNID = re.compile(r"^n\d{8}$")
VAL_NAME = "ILSVRC2012_val_{:08d}"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
LABELS_HINT = ("the devkit's ILSVRC2012_validation_ground_truth.txt (with meta.mat next to it, or --meta) "
               "or Kaggle's LOC_val_solution.csv")
NAMES_HINT = ("pass --clip-names FILE: the 1,000 CLIP class names in class-index order, one per line "
              "(IMAGENET_CLASSNAMES in open_clip's src/open_clip/zero_shot_metadata.py, MIT licence; or "
              "`pip install open_clip_torch` and omit --clip-names)")


def _require_file(path, what, hint):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}; expected {hint}")


def read_loc_csv(path):
    """``{image id: wnid}`` from ``LOC_val_solution.csv``."""
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DatasetError(f"{path}: expected the header 'ImageId,PredictionString', got {header!r}")
        for i, row in enumerate(reader, start=2):
            if not row:
                continue
            tokens = row[1].split() if len(row) > 1 else []
            if not tokens or not WNID.match(tokens[0]):
                raise DatasetError(f"{path}: line {i} {row!r} does not start its PredictionString with a wnid")
            out[row[0].strip()] = tokens[0]
    return out


def read_meta_wnids(path):
    """``{ILSVRC2012_ID: wnid}`` from the devkit's ``meta.mat`` (``synsets`` struct array)."""
    _require_file(path, "devkit meta.mat", "ILSVRC2012_devkit_t12/data/meta.mat (or pass --meta)")
    try:
        import numpy as np
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError(f"reading {path} needs scipy (pip install scipy), or use LOC_val_solution.csv") from None
    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
        ids = [int(np.squeeze(x)) for x in np.atleast_1d(synsets["ILSVRC2012_ID"])]
        wnids = [str(np.squeeze(x)) for x in np.atleast_1d(synsets["WNID"])]
    except Exception as err:
        raise DatasetError(f"{path}: not the ImageNet devkit meta.mat ({type(err).__name__}: {err})") from None
    return dict(zip(ids, wnids))


def read_devkit_labels(path, meta):
    """``{image id: wnid}`` from ``ILSVRC2012_validation_ground_truth.txt`` + ``meta.mat``."""
    id_to_wnid = read_meta_wnids(meta)
    out = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate((ln.strip() for ln in f if ln.strip()), start=1):
            try:
                wnid = id_to_wnid[int(line)]
            except (ValueError, KeyError):
                raise DatasetError(f"{path}: line {i} {line!r} is not an ILSVRC2012_ID of {meta}") from None
            out[VAL_NAME.format(i)] = wnid
    return out


def read_val_labels(labels, meta=None):
    """``{image id (file name without extension): wnid}`` from either labels format."""
    _require_file(labels, "labels file", LABELS_HINT)
    if labels.lower().endswith(".csv"):
        return read_loc_csv(labels)
    return read_devkit_labels(labels, meta or os.path.join(os.path.dirname(os.path.abspath(labels)), "meta.mat"))


def sort_val_folder(root, labels, meta=None):
    """Move flat val images into wnid folders; returns ``(moved, already sorted, wnid folders)``."""
    val_dir = os.path.join(os.path.abspath(root), "imagenet", "images", "val")
    if not os.path.isdir(val_dir):
        raise FileNotFoundError(f"ImageNet validation folder not found: {val_dir}; "
                                "extract ILSVRC2012_img_val.tar there")
    mapping = read_val_labels(labels, meta)
    entries = sorted(n for n in os.listdir(val_dir) if not n.startswith("."))
    flat = [n for n in entries if os.path.isfile(os.path.join(val_dir, n)) and n.lower().endswith(IMAGE_EXTENSIONS)]
    sorted_dirs = [n for n in entries if os.path.isdir(os.path.join(val_dir, n)) and WNID.match(n)]
    already = sum(len(os.listdir(os.path.join(val_dir, d))) for d in sorted_dirs)
    unlabeled = [n for n in flat if os.path.splitext(n)[0] not in mapping]
    if unlabeled:
        raise DatasetError(f"{len(unlabeled)} image(s) in {val_dir} have no label in {labels}, first: {unlabeled[0]}; "
                           "nothing was moved")
    moves = [(os.path.join(val_dir, n), os.path.join(val_dir, mapping[os.path.splitext(n)[0]], n)) for n in flat]
    clash = next((dst for _, dst in moves if os.path.exists(dst)), None)
    if clash:
        raise DatasetError(f"{clash} already exists (a flat copy of it is still in {val_dir}); nothing was moved")
    for src, dst in moves:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
    folders = len({os.path.dirname(dst) for _, dst in moves} | {os.path.join(val_dir, d) for d in sorted_dirs})
    if not moves and not already:
        raise DatasetError(f"no images in {val_dir}")
    return len(moves), already, folders


def read_clip_names(path):
    """Names (one per line, class-index order) or ``{wnid: name}`` when every line is ``<wnid> <name>``."""
    _require_file(path, "CLIP class-name list", "one class name per line")
    with open(path, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    pairs = [ln.split(" ", 1) for ln in lines]
    if lines and all(len(p) == 2 and WNID.match(p[0]) for p in pairs):
        return {w: n.strip() for w, n in pairs}
    return lines


def default_clip_names():
    """open_clip's ``IMAGENET_CLASSNAMES`` when that package is installed, else ``None``."""
    try:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    except Exception:
        return None
    return list(IMAGENET_CLASSNAMES)


def classnames_lines(wnids, names, source):
    """``["<wnid> <name>"]`` for the sorted ``wnids``; ``names`` is a list (index order) or a dict."""
    if isinstance(names, dict):
        missing = [w for w in wnids if w not in names]
        if missing:
            raise DatasetError(f"{source} has no name for wnid {missing[0]} ({len(missing)} missing)")
        return [f"{w} {names[w]}" for w in wnids]
    if len(names) != len(wnids):
        raise DatasetError(f"{source} has {len(names)} names but images/train has {len(wnids)} wnid folders; "
                           "expected one name per wnid, in sorted-wnid (class-index) order")
    return [f"{w} {n}" for w, n in zip(wnids, names)]


def write_classnames(root, clip_names=None, force=False):
    """Write ``<root>/imagenet/classnames.txt``; returns ``(path, number of classes, status)``."""
    dataset_dir = os.path.join(os.path.abspath(root), "imagenet")
    train_dir = os.path.join(dataset_dir, "images", "train")
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(f"ImageNet train folder not found: {train_dir}")
    wnids = sorted(n for n in os.listdir(train_dir) if WNID.match(n) and os.path.isdir(os.path.join(train_dir, n)))
    if not wnids:
        raise DatasetError(f"no wnid folders (nXXXXXXXX) in {train_dir}")
    if clip_names:
        names, source = read_clip_names(clip_names), clip_names
    else:
        names, source = default_clip_names(), "open_clip's IMAGENET_CLASSNAMES"
        if names is None:
            raise DatasetError(f"no CLIP class-name list: {NAMES_HINT}")
    text = "\n".join(classnames_lines(wnids, names, source)) + "\n"
    path = os.path.join(dataset_dir, "classnames.txt")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return path, len(wnids), "up to date"
        if not force:
            raise DatasetError(f"{path} exists with other content; pass --force to overwrite it")
    atomic_write_text(path, text)
    return path, len(wnids), "written"
