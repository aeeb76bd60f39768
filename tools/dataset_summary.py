"""Inspect a dataset exactly as ``train.py`` builds it, without loading any model.

    python tools/dataset_summary.py --root DATA --dataset-config-file configs/datasets/oxford_pets.yaml \
        --seed 1 [--config-file METHOD.yaml] [--list] [KEY VALUE ...]

Config: ``engine.config.setup_cfg(args, extend=trainers.config.extend_cfg)`` (train.py's merge order);
then, like train.py, ``set_random_seed(SEED)`` when ``SEED >= 0`` and the dataset is built right after
(nothing else draws from ``random`` in between), so the few-shot cache it writes
(``<dataset_dir>/split_fewshot/shot_{K}-seed_{S}.json``) is the file train.py would write/read.
Prints one JSON object on stdout (logs go to stderr): dataset, dataset_dir, num_classes, classnames,
sizes (train_x/val/test), missing_images; with ``--list`` also the few-shot train/val image paths.
Exit status 2 with one ``error: ...`` line on bad input.
"""
import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def build_parser():
    p = argparse.ArgumentParser(description="Print a dataset summary as JSON (no model is loaded)")
    p.add_argument("--root", type=str, default="", help="path to the datasets (DATASET.ROOT)")
    p.add_argument("--dataset-config-file", type=str, default="", help="configs/datasets/<name>.yaml")
    p.add_argument("--config-file", type=str, default="", help="optional method config (as given to train.py)")
    p.add_argument("--seed", type=int, default=None, help="SEED (0 included), as for train.py")
    p.add_argument("--list", action="store_true", help="also list the (few-shot) train and val image paths")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def summarize(cfg, with_list=False):
    """Seed like train.py, build the dataset, return the summary dict."""
    from engine.data import build_dataset
    from engine.data.image_check import find_missing_images
    from engine.utils.seed import set_random_seed

    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    ds = build_dataset(cfg)
    _, missing = find_missing_images(ds.train_x, ds.val, ds.test)
    out = {
        "dataset": type(ds).__name__,
        "dataset_dir": ds.dataset_dir,
        "num_shots": cfg.DATASET.NUM_SHOTS,
        "seed": cfg.SEED,
        "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES,
        "num_classes": ds.num_classes,
        "classnames": ds.classnames,
        "sizes": {"train_x": len(ds.train_x), "val": len(ds.val or []), "test": len(ds.test)},
        "missing_images": len(missing),
    }
    if with_list:
        out["train_x"] = [d.impath for d in ds.train_x]
        out["val"] = [d.impath for d in ds.val or []]
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    from engine.utils.logger import log_to_stderr

    log_to_stderr()
    try:
        from engine.config import ConfigError, setup_cfg
        from engine.data import DatasetError
        from engine.registry import RegistryKeyError
        from trainers.config import extend_cfg

        cfg = setup_cfg(args, extend=extend_cfg)
        summary = summarize(cfg, with_list=args.list)
    except (ConfigError, DatasetError, RegistryKeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
