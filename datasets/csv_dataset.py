"""``CSV``: a custom dataset from one CSV file.

``DATASET.CSV_FILE`` (absolute, or relative to ``DATASET.ROOT`` when ROOT is set, else to the working
directory) has rows ``path,label,classname[,split]``; an optional header row is recognised by a
non-integer label column. ``path`` is relative to the CSV's folder (or absolute); labels are 0-based
integers, one class name per label. ``split`` is ``train``/``val``/``test``; without that column the
rows are split per class like ``ImageFolder`` (rows sorted by path, shuffled with
``random.Random(SPLIT_SEED)``, 50/20/30 with ``round``). Few-shot caches go to
``<csv folder>/split_fewshot/``.

Splits work on distinct images (paths compared after ``os.path.normpath``): a row repeating an earlier
row's image with the same label and split is dropped (one warning counts them); the same image with
another label, or in another split, is refused in one line naming both lines.
"""
import csv
import os

from engine.data import DATASET_REGISTRY, DatasetBase, Datum
from engine.data.base_dataset import DatasetError
from engine.data.fewshot import load_or_create_fewshot
from engine.data.folders import require_file
from engine.data.sampling import subsample_classes
from engine.data.splits import split_groups
from engine.utils.logger import get_logger

SPLITS = ("train", "val", "test")


def resolve_csv(cfg):
    """Absolute path of ``DATASET.CSV_FILE`` (errors name the key and the path)."""
    path = cfg.DATASET.CSV_FILE
    if not path:
        raise DatasetError("DATASET.NAME CSV needs DATASET.CSV_FILE (a file of path,label,classname rows)")
    path = os.path.expanduser(path)
    if not os.path.isabs(path) and cfg.DATASET.ROOT:
        path = os.path.join(os.path.expanduser(cfg.DATASET.ROOT), path)
    return require_file(os.path.abspath(path), "DATASET.CSV_FILE")


def _csv_lines(path):
    """The rows of ``path`` as UTF-8 (a UTF-8 byte-order mark is skipped); a file in another encoding is
    one ``DatasetError`` naming it."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetError(f"{path} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as f:
            return list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                           "save it as UTF-8") from None
    except csv.Error as e:
        raise DatasetError(f"{path} is not a readable CSV file ({e})") from None


def read_rows(path):
    """``[(impath, label, classname, split or None)]``, each image once, with one-line errors naming the line."""
    base = os.path.dirname(path)
    rows, lab2cname, cname2lab = [], {}, {}
    seen, repeats = {}, []  # normalised image path -> (line, label, split); [(line, earlier line, path)]
    for lineno, row in enumerate(_csv_lines(path), start=1):
        if not row or not "".join(row).strip():
            continue
        row = [c.strip() for c in row]
        if len(row) not in (3, 4):
            raise DatasetError(f"{path}:{lineno}: expected path,label,classname[,split], got {row}")
        try:
            label = int(row[1])
        except ValueError:
            if lineno == 1 and not rows:
                continue  # header
            raise DatasetError(f"{path}:{lineno}: label {row[1]!r} is not an integer") from None
        split = row[3].lower() if len(row) == 4 else None
        if split is not None and split not in SPLITS:
            raise DatasetError(f"{path}:{lineno}: split {row[3]!r}; expected one of {list(SPLITS)}")
        if lab2cname.setdefault(label, row[2]) != row[2] or cname2lab.setdefault(row[2], label) != label:
            raise DatasetError(f"{path}:{lineno}: label {label} / class name {row[2]!r} disagree with an "
                               f"earlier row (one class name per label)")
        impath = os.path.join(base, row[0])
        key = os.path.normpath(impath)
        if key in seen:
            line0, label0, split0 = seen[key]
            if label0 != label:
                raise DatasetError(f"{path}:{lineno}: image {row[0]} has label {label} here and {label0} on line "
                                   f"{line0}; an image has one label")
            if split0 != split:
                raise DatasetError(f"{path}:{lineno}: image {row[0]} is in split {split} here and in {split0} on "
                                   f"line {line0}; an image must be in one split (it would be tested on what "
                                   "was trained on)")
            repeats.append((lineno, line0, row[0]))
            continue
        seen[key] = (lineno, label, split)
        rows.append((impath, label, row[2], split))
    if not rows:
        raise DatasetError(f"{path}: no data rows")
    if repeats:
        lineno, line0, name = repeats[0]
        get_logger().warning(f"{path}: {len(repeats)} rows repeat an image listed earlier (first: line {lineno}, "
                             f"{name}, as line {line0}); each image is used once")
    return rows


@DATASET_REGISTRY.register()
class CSV(DatasetBase):
    def __init__(self, cfg):
        path = resolve_csv(cfg)
        self.dataset_dir = self.image_dir = os.path.dirname(path)
        rows = read_rows(path)
        has_split = {r[3] is not None for r in rows}
        if len(has_split) != 1:
            raise DatasetError(f"{path}: either every row or no row must have the split column")
        if has_split == {True}:
            train, val, test = ([Datum(p, y, 0, c) for p, y, c, s in rows if s == k] for k in SPLITS)
        else:
            by_label = {}
            for p, y, c, _ in rows:
                by_label.setdefault((y, c), []).append(p)
            groups = [(y, c, sorted(ps), f"{c!r} (label {y}) in {path}") for (y, c), ps in sorted(by_label.items())]
            train, val, test = split_groups(groups)
        if not test:
            raise DatasetError(f"{path}: no test rows")
        train, val = load_or_create_fewshot(
            self.dataset_dir, self.image_dir, train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        train, val, test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)
