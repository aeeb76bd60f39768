"""Prepare and verify datasets in the CoOp layout (docs/DATASETS.md has one block per dataset).

    python tools/prepare_data.py verify DATASET --root DATA [--decode] [--expect CLASSES TRAIN VAL TEST]
    python tools/prepare_data.py imagenet-val --root DATA --labels FILE [--meta meta.mat]
    python tools/prepare_data.py imagenet-classnames --root DATA [--clip-names FILE] [--force]

``verify``: folder tree, split file, classes and train/val/test counts against CoOp's published sizes
(``engine.data.published_counts``; ``--expect`` overrides them, -1 = not compared), missing and
unreadable images; prints a one-screen report, exit 1 if any check fails. Nothing is written
(no split generation, no few-shot sampling; only ImageNet's official ``preprocessed.pkl`` is imported
once into ``preprocessed.json``, as training would).
``imagenet-val``: sorts the flat validation images into ``images/val/<wnid>/`` from the devkit ground
truth (+ ``meta.mat``) or ``LOC_val_solution.csv``; safe to re-run (``engine.data.imagenet_prep``).
``imagenet-classnames``: writes ``imagenet/classnames.txt`` (``<wnid> <CLIP class name>``).
Bad input: one ``error: ...`` line, exit 2.
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def build_parser():
    p = argparse.ArgumentParser(description="Prepare and verify datasets in the CoOp layout")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a dataset against the published layout and sizes")
    v.add_argument("dataset", help="registered dataset name, e.g. OxfordPets (see configs/datasets/*.yaml)")
    v.add_argument("--root", required=True, help="DATASET.ROOT (the folder holding the dataset folders)")
    v.add_argument("--decode", action="store_true", help="fully decode every image (default: open + verify)")
    v.add_argument("--expect", nargs=4, type=int, metavar=("CLASSES", "TRAIN", "VAL", "TEST"),
                   help="compare with these counts instead of the published ones (-1 = do not compare)")
    iv = sub.add_parser("imagenet-val", help="sort the flat ImageNet val folder into wnid folders")
    iv.add_argument("--root", required=True, help="DATASET.ROOT (holds imagenet/images/val)")
    iv.add_argument("--labels", required=True,
                    help="ILSVRC2012_validation_ground_truth.txt (devkit) or LOC_val_solution.csv (Kaggle)")
    iv.add_argument("--meta", default=None, help="devkit meta.mat (default: next to --labels)")
    ic = sub.add_parser("imagenet-classnames", help="write imagenet/classnames.txt (wnid + CLIP class name)")
    ic.add_argument("--root", required=True, help="DATASET.ROOT (holds imagenet/images/train)")
    ic.add_argument("--clip-names", default=None,
                    help="CLIP class names, one per line in class-index order (default: open_clip's list if installed)")
    ic.add_argument("--force", action="store_true", help="overwrite an existing classnames.txt that differs")
    return p


def run_verify(args):
    from engine.data.prepare import FAIL, format_report, verify_dataset
    from engine.data.published_counts import Counts

    expected = None
    if args.expect:
        expected = Counts(*(None if n < 0 else n for n in args.expect))
    checks = verify_dataset(args.dataset, args.root, expected=expected, decode=args.decode)
    print(format_report(args.dataset, args.root, checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


def run_imagenet_val(args):
    from engine.data.imagenet_prep import sort_val_folder

    moved, already, folders = sort_val_folder(args.root, args.labels, args.meta)
    print(f"imagenet-val: moved {moved:,} images; {already:,} were already sorted; {folders:,} wnid folders")
    return 0


def run_imagenet_classnames(args):
    from engine.data.imagenet_prep import write_classnames

    path, n, status = write_classnames(args.root, args.clip_names, force=args.force)
    print(f"imagenet-classnames: {path} {status} ({n:,} classes)")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    from engine.utils.logger import log_to_stderr

    log_to_stderr()
    commands = {"verify": run_verify, "imagenet-val": run_imagenet_val, "imagenet-classnames": run_imagenet_classnames}
    try:
        return commands[args.command](args)
    except (ValueError, KeyError, OSError) as e:  # DatasetError/RegistryKeyError/FileNotFoundError: one line
        message = str(e) if not isinstance(e, KeyError) or str(e) else repr(e)
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
