"""Import the official code's few-shot pickles of whole dataset folders into our JSON files.

    python tools/convert_fewshot.py DATASET [DATASET ...] --root DATA [--overwrite]

For each dataset (registered name, e.g. ``OxfordPets``, ``ImageNet``), every
``<dataset folder>/split_fewshot/shot_K-seed_S.pkl`` without a ``.json`` twin is read through the
restricted unpickler (``engine.data.legacy_fewshot``: only Dassl's ``Datum`` and builtin containers;
anything else is refused with one line naming the file and the forbidden global) and written as
``shot_K-seed_S.json`` atomically; its items must be images of the current split with the same labels.
ImageNet's ``preprocessed.pkl`` is imported into ``preprocessed.json`` when the dataset is built.
Training does the same on demand; this tool converts everything up front. One line per file; exit 1
if any file was refused, 2 with one ``error: ...`` line on bad input.
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def build_parser():
    p = argparse.ArgumentParser(description="Convert official split_fewshot/*.pkl files to JSON (safely)")
    p.add_argument("datasets", nargs="+", help="registered dataset names, e.g. OxfordPets ImageNet")
    p.add_argument("--root", required=True, help="DATASET.ROOT (the folder holding the dataset folders)")
    p.add_argument("--overwrite", action="store_true", help="re-import files whose JSON already exists")
    return p


def convert(name, root, overwrite=False):
    """``[(pkl, json, status)]`` for one dataset (built with all its data, nothing sampled)."""
    from engine.config import get_cfg_default
    from engine.data import build_dataset
    from engine.data.fewshot import convert_fewshot_folder

    cfg = get_cfg_default()
    cfg.DATASET.ROOT = os.path.abspath(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = -1
    ds = build_dataset(cfg)
    image_dir = getattr(ds, "image_dir", ds.dataset_dir)
    prefix = ds.dataset_dir if getattr(type(ds), "prefix_is_dataset_dir", False) else image_dir
    with_val = type(ds).__name__ != "ImageNet"  # ImageNet's shot files hold only "train"
    return convert_fewshot_folder(ds.dataset_dir, prefix, ds.train_x, ds.val, with_val=with_val, overwrite=overwrite)


def main(argv=None):
    args = build_parser().parse_args(argv)
    from engine.utils.logger import log_to_stderr

    log_to_stderr()
    failed = 0
    try:
        for name in args.datasets:
            results = convert(name, args.root, args.overwrite)
            if not results:
                print(f"{name}: no split_fewshot/shot_K-seed_S.pkl files")
            for pkl, out, status in results:
                ok = status in ("imported", "exists")
                failed += not ok
                print(f"{name}: {pkl} -> {out}: {status}" if ok else f"{name}: refused: {status}")
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
