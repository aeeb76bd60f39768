"""Verify a prepared dataset against CoOp's published layout and sizes (``tools/prepare_data.py verify``).

``verify_dataset(name, root, expected=None, decode=False)`` -> ``[Check]``, each
``Check(name, status, detail)`` with status ``"ok"``, ``"FAIL"`` or ``"skip"``:

1. folder tree: ``<root>/<folder>`` and its image folder(s) exist;
2. split file: the published split JSON (ImageNet family: ``classnames.txt``; FGVCAircraft: the
   official lists) exists -- never generated here (``DATASET.ALLOW_GENERATED_SPLIT`` False; only an
   official ImageNet ``preprocessed.pkl`` is imported, as training would) --
   and the dataset builds from it (``NUM_SHOTS`` -1, all classes; nothing is sampled);
3. classes, train, val, test: the counts as built equal ``expected`` (default
   ``engine.data.published_counts.PUBLISHED[name]``; ``None`` entries are not compared);
4. missing images (one ``stat`` per distinct path) and unreadable images (each existing image is
   opened and ``verify()``-ed by PIL; ``decode=True`` fully decodes it, slower).
"""
import os
from typing import NamedTuple

from PIL import Image

from .base_dataset import DatasetError
from .image_check import find_missing_images
from .published_counts import PUBLISHED, Counts

OK, FAIL, SKIP = "ok", "FAIL", "skip"


class Check(NamedTuple):
    name: str
    status: str
    detail: str


def expected_paths(cls, dataset_dir):
    """``[(what, path)]`` the dataset needs before it can be built (folders, split/class files)."""
    image_subdir = getattr(cls, "image_subdir", None)
    folders = [("dataset folder", dataset_dir)]
    files = []
    if cls.__name__ == "ImageNet":
        folders += [("train images", os.path.join(dataset_dir, "images", "train")),
                    ("val images", os.path.join(dataset_dir, "images", "val"))]
        files.append(("class names", os.path.join(dataset_dir, "classnames.txt")))
    else:
        if image_subdir:
            folders.append(("images", os.path.join(dataset_dir, image_subdir)))
        split_file = getattr(cls, "split_file", "")
        if cls.__name__ == "FGVCAircraft":
            files += [("split list", os.path.join(dataset_dir, f"images_variant_{s}.txt"))
                      for s in ("train", "val", "test")]
            files.append(("class list", os.path.join(dataset_dir, "variants.txt")))
        elif split_file:
            files.append(("split file", os.path.join(dataset_dir, split_file)))
        else:
            files.append(("class names", os.path.join(dataset_dir, "classnames.txt")))
    return folders, files


def _build(cls_name, root):
    from engine.config import get_cfg_default
    from engine.data import build_dataset

    cfg = get_cfg_default()
    cfg.DATASET.ROOT = os.path.abspath(root)
    cfg.DATASET.NAME = cls_name
    cfg.DATASET.NUM_SHOTS = -1
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.DATASET.ALLOW_GENERATED_SPLIT = False
    return build_dataset(cfg)


def unreadable_images(paths, decode=False):
    """``[(path, reason)]`` of the images PIL cannot open/verify (or decode when ``decode``)."""
    bad = []
    for path in paths:
        try:
            with Image.open(path) as img:
                if decode:
                    img.load()
                else:
                    img.verify()
        except Exception as err:  # PIL raises many types for corrupt files
            bad.append((path, f"{type(err).__name__}: {err}"))
    return bad


def _count_check(what, got, want):
    if want is None:
        return Check(what, SKIP, f"{got:,} (no published {what} split)")
    return Check(what, OK if got == want else FAIL, f"{got:,} (published {want:,})")


def verify_dataset(name, root, expected=None, decode=False):
    """All checks for registered dataset ``name`` under ``root`` (see module docstring)."""
    from engine.data.registry import DATASET_REGISTRY, import_dataset_packages

    import_dataset_packages()  # registers every dataset class
    cls = DATASET_REGISTRY.get(name)
    name = cls.__name__
    expected = expected if expected is not None else PUBLISHED.get(name)
    folder = getattr(cls, "folder", "")
    if not folder:
        raise DatasetError(f"{name} has no fixed folder layout to verify (use it with DATASET.ROOT directly)")
    dataset_dir = os.path.join(os.path.abspath(root), folder)
    folders, files = expected_paths(cls, dataset_dir)
    checks = []
    missing_dirs = [p for _, p in folders if not os.path.isdir(p)]
    checks.append(Check("folder tree", FAIL if missing_dirs else OK,
                        f"missing folder {missing_dirs[0]}" if missing_dirs else dataset_dir))
    missing_files = [p for _, p in files if not os.path.isfile(p)]
    checks.append(Check("split file", FAIL if missing_files else OK,
                        f"missing {missing_files[0]}" if missing_files
                        else ", ".join(os.path.basename(p) for _, p in files)))
    try:
        ds = _build(name, root)
    except (DatasetError, FileNotFoundError, ValueError) as err:
        if not missing_dirs and not missing_files:
            checks.append(Check("dataset builds", FAIL, str(err)))
        for what in ("classes", "train", "val", "test", "missing images", "unreadable images"):
            checks.append(Check(what, SKIP, "the dataset does not build"))
        return checks
    want = expected or Counts(None, None, None, None)
    if want.classes is None:
        checks.append(Check("classes", SKIP, f"{ds.num_classes:,} (no published count)"))
    else:
        checks.append(Check("classes", OK if ds.num_classes == want.classes else FAIL,
                            f"{ds.num_classes:,} (published {want.classes:,})"))
    test_only = want.train is None and want.val is None
    checks.append(_count_check("train", len(ds.train_x), None if test_only else want.train))
    checks.append(_count_check("val", len(ds.val or []), want.val))
    checks.append(_count_check("test", len(ds.test or []), want.test))
    n, missing = find_missing_images(ds.train_x, ds.val, ds.test)
    checks.append(Check("missing images", FAIL if missing else OK,
                        f"{len(missing):,} of {n:,}, first: {missing[0]}" if missing else f"0 of {n:,}"))
    present = sorted({d.impath for src in (ds.train_x, ds.val, ds.test) for d in src or ()} - set(missing))
    bad = unreadable_images(present, decode=decode)
    checks.append(Check("unreadable images", FAIL if bad else OK,
                        f"{len(bad):,}, first: {bad[0][0]} ({bad[0][1]})" if bad else
                        f"0 of {len(present):,} ({'decoded' if decode else 'opened'})"))
    return checks


def format_report(name, root, checks):
    """One screen: a line per check, then ``result: ok`` or ``result: FAIL (n checks)``."""
    lines = [f"{name} under {os.path.abspath(root)}"]
    for check in checks:
        lines.append(f"  {check.name:<18} {check.status:<4}  {check.detail}")
    failed = sum(c.status == FAIL for c in checks)
    lines.append("result: ok" if not failed else f"result: FAIL ({failed} check{'s' if failed > 1 else ''})")
    return "\n".join(lines)
