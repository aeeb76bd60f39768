"""Pretrain (once) the tiny CLIP of the offline demo and print the path of its weights.

    python tools/pretrain_tiny_clip.py [--cache-dir DIR] [--seed N] [--steps N] [--stop-after N] [--force]
        [--print-recipe]

Trains a small OpenAI-architecture CLIP contrastively on drawn images of every Shapes class with
varied captions (``demo.tiny_pretrain``), seeded and deterministic, and saves its state
dict atomically at ``<cache dir>/tiny-clip-shapes-<digest of the recipe>.pt`` (default cache dir:
``$CLIP_CACHE_DIR`` or ``~/.cache/clip``), next to a ``.json`` with the recipe and final metrics.
When that file exists nothing is trained. Progress lines give the elapsed time and an ETA; the state
is saved every 200 steps to ``<weights>.partial``, so a stopped or killed run continues where it
was (``--stop-after N`` stops on purpose). ``--steps`` is part of the recipe: another value trains
another model with its own digest and file. The last stdout line is the weights path; use it with
``MODEL.BACKBONE.PATH <path> INPUT.SIZE "(R, R)"`` (``--print-recipe`` prints R and the rest).
Exit status 2 with one ``error: ...`` line on bad input.
"""
import argparse
import dataclasses
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


EXIT_STOPPED = 3


def build_parser():
    from demo.tiny_pretrain import CHECKPOINT_EVERY, Recipe

    d = Recipe()
    p = argparse.ArgumentParser(
        description="Pretrain the tiny demo CLIP on drawn Shapes (cached; prints the weights path)")
    p.add_argument("--cache-dir", default="",
                   help="folder of the cached weights (default: $CLIP_CACHE_DIR or ~/.cache/clip)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"pretraining seed (default {d.seed})")
    p.add_argument("--steps", type=int, default=d.steps,
                   help=f"optimiser steps (default {d.steps}); part of the recipe, so another value is another "
                        "model with its own cache file (another digest), never the default one")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="train at most N steps in this session, save the state and exit with status 3; "
                        "run again to continue (a stopped or killed run resumes from the last state, saved "
                        f"every {CHECKPOINT_EVERY} steps)")
    p.add_argument("--force", action="store_true", help="retrain even when the cached file exists")
    p.add_argument("--print-recipe", action="store_true",
                   help="print the recipe as JSON (with its weights path and INPUT.SIZE) and exit without training")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from demo.tiny_pretrain import Recipe, ensure_pretrained, weights_path

    if args.steps < 1:
        print(f"error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    recipe = Recipe(seed=args.seed, steps=args.steps)
    cache_dir = os.path.abspath(os.path.expanduser(args.cache_dir)) if args.cache_dir else None
    path = weights_path(recipe, cache_dir)
    if args.print_recipe:
        print(json.dumps({**dataclasses.asdict(recipe), "digest": recipe.digest(), "weights": path,
                          "input_size": f"({recipe.image_size}, {recipe.image_size})"}, indent=1))
        return 0
    try:
        if args.force and os.path.isfile(path):
            os.remove(path)
        path = ensure_pretrained(recipe, cache_dir, stop_after=args.stop_after)
    except OSError as err:
        print(f"error: cannot write the tiny CLIP weights under {os.path.dirname(path)}: {err}", file=sys.stderr)
        return 2
    if path is None:
        print("stopped (--stop-after); run the same command again to continue", file=sys.stderr)
        return EXIT_STOPPED
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
