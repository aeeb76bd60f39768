"""Classify images with a trained run folder: the top-k class names and probabilities per image.

    python tools/predict.py --model-dir DIR --classnames FILE IMAGE|FOLDER|'GLOB' ... [--top-k 5]
        [--load-epoch N] [--trainer NAME] [--config-file YAML] [--device auto|cpu|cuda] [--json OUT]
        [KEY VALUE ...]

``DIR`` is a ``train.py`` output folder (its ``run_record.json`` holds the trainer and config the run
was trained with) or an official repo's output folder (then pass ``--trainer``, ``--config-file`` and
the ``KEY VALUE`` opts of the run). Without ``--model-dir`` the method is used as built (zero-shot
CLIP: ``--trainer ZeroshotCLIP``). ``FILE`` holds one class name a line, in label order. Images are
files, folders (their images, recursively, sorted) or glob patterns. Images go
through the run's test transform (``engine.api``). Prints one line per image::

    cat.jpg: cat 0.9123, dog 0.0512, bird 0.0101

``--json OUT`` also writes ``[{"image", "top": [[name, probability], ...]}]`` atomically. Trailing
``KEY VALUE`` opts start at the first upper-case dotted key (or after ``--``). Bad input: one
``error: ...`` line, exit status 2.
"""
import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

EXIT_USAGE = 2


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def build_parser():
    p = argparse.ArgumentParser(
        description="Top-k class predictions of a trained prompt-learning run",
        usage="%(prog)s [-h] (--model-dir DIR | --trainer NAME) --classnames FILE [options] IMAGE [IMAGE ...] "
              "[KEY VALUE ...]",
        epilog="IMAGE: image files, folders (every image in them, recursively, sorted) or glob patterns "
               "(quoted, e.g. 'photos/*.jpg'). Trailing KEY VALUE pairs override the config as in train.py "
               "(e.g. MODEL.BACKBONE.PATH weights.pt INPUT.SIZE \"(224, 224)\"); they start at the first "
               "upper-case dotted key, or after --.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    p.add_argument("--model-dir", default="", help="train.py output folder (or an official one)")
    p.add_argument("--classnames", required=True, help="text file with one class name a line, in label order")
    p.add_argument("--top-k", type=int, default=5, help="class names printed per image (default 5)")
    p.add_argument("--load-epoch", type=int, default=None, help="checkpoint epoch (default: best, else last)")
    p.add_argument("--trainer", default="", help="method, when the folder has no run_record.json")
    p.add_argument("--config-file", default="", help="method YAML, when the folder has no run_record.json")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", default="", help="also write the predictions to this JSON file")
    return p


def read_classnames(path):
    """Class names of ``path`` (one a line, blank lines skipped); one-line errors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--classnames: no file at {path}")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise ValueError(f"--classnames {path}: no class names")
    return names


def expand_images(items):
    """Image paths of ``items``: a file as is, a folder's images (recursively, sorted), a glob
    pattern's matches (sorted); an item matching nothing is a one-line ``FileNotFoundError``."""
    import glob

    out = []
    for item in items:
        if os.path.isfile(item):
            out.append(item)
        elif os.path.isdir(item):
            found = sorted(os.path.join(d, f) for d, _, files in os.walk(item) for f in files
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder {item}")
            out.extend(found)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f"no file matches {item}")
            out.extend(found)
        else:
            raise FileNotFoundError(f"image not found: {item} (expected an image file, a folder or a glob pattern)")
    return out


def open_images(paths):
    """PIL images of ``paths`` (RGB, as the loader reads them: ``engine.data.image_check.read_image``); an
    unreadable file or an unsupported mode is a one-line ValueError naming it."""
    from engine.data.image_check import read_image

    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        images.append(read_image(path))
    return images


def predict(args, opts):
    """``[(image, [(name, probability), ...])]`` for the parsed arguments."""
    from engine.api import build_model, load_model

    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if len(opts) % 2:
        raise ValueError(f"config opts must be KEY VALUE pairs, got an odd list: {opts}")
    classnames = read_classnames(args.classnames)
    paths = expand_images(args.images)
    images = open_images(paths)
    device = None if args.device == "auto" else args.device
    kwargs = dict(zip(opts[0::2], opts[1::2]))
    config = args.config_file or None
    if args.model_dir:
        model = load_model(args.model_dir, classnames, epoch=args.load_epoch, trainer=args.trainer or None,
                           config=config, device=device, **kwargs)
    elif args.trainer:
        model = build_model(args.trainer, classnames, config=config, device=device, **kwargs)
    else:
        raise ValueError("pass --model-dir (a trained run) or --trainer (a method as built, e.g. ZeroshotCLIP)")
    return list(zip(paths, model.topk(images, k=args.top_k)))


def main(argv=None):
    from engine.utils.cli import split_argv

    argv = list(sys.argv[1:] if argv is None else argv)
    flags, opts = split_argv(argv)
    args = build_parser().parse_args(flags)
    from engine.utils.logger import log_to_stderr

    log_to_stderr()
    from engine.checkpoint import CheckpointError

    try:
        results = predict(args, opts)
    except (ValueError, FileNotFoundError, KeyError, CheckpointError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    for image, top in results:
        print(f"{image}: " + ", ".join(f"{name} {prob:.4f}" for name, prob in top))
    if args.json:
        from engine.utils.io import atomic_write_text

        rows = [{"image": image, "top": [[name, prob] for name, prob in top]} for image, top in results]
        atomic_write_text(args.json, json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
