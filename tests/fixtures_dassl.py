"""Helpers for the Dassl compatibility tests: the miniature research repo, its data, a tiny random CLIP
file, and running Python with the compatibility package (never in the pytest process itself)."""
import json
import os
import subprocess
import sys

import numpy as np

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
SHIM_DIR = os.path.join(REPO_ROOT, "compat", "dassl_shim")
RESEARCH_REPO = os.path.join(TESTS_DIR, "dassl_research_repo")
CLASSES = ("red_thing", "green_thing", "blue_thing")


def make_tiny_folder(root, per_class=8, seed=0):
    """``root/tiny_folder/images/<class>/img<i>.png``: 3 colour classes of 40x40 noisy images."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        folder = os.path.join(root, "tiny_folder", "images", CLASSES[c])
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour)[None, None] + rng.randint(-30, 30, (40, 40, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, f"img{i}.png"))
    return root


def make_tiny_clip_file(path, seed=0):
    """A random ViT-Tiny/16 CLIP state dict saved as a plain weights file (what ``clip.build_model`` reads)."""
    import torch

    from engine.backbone._clip import CLIP
    from engine.backbone.architectures import get_architecture

    torch.manual_seed(seed)
    torch.save(CLIP(**get_architecture("ViT-Tiny/16")).state_dict(), path)
    return path


def run_with_shim(code, cwd=None, env=None):
    """Run ``code`` in a fresh interpreter with the compatibility package first on ``sys.path``."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([SHIM_DIR, REPO_ROOT])
    return subprocess.run([sys.executable, "-c", code], cwd=cwd or REPO_ROOT, env=full_env, capture_output=True,
                          text=True, timeout=240)


def run_json(code, **kwargs):
    """``run_with_shim`` of ``code`` that prints one JSON document last; returns it (fails with stderr)."""
    out = run_with_shim(code, **kwargs)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def dassl_train(args, repo=RESEARCH_REPO, env=None, timeout=300):
    """``python train.py --dassl-repo REPO <args>`` in a subprocess from the repo root."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "train.py"), "--dassl-repo", repo, *args],
                          cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
