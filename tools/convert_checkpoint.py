"""Convert an official CoOp/CoCoOp/MaPLe/COMMA (Dassl) checkpoint into our plain checkpoint format.

usage: python tools/convert_checkpoint.py IN OUT [--trust] [--keep-frozen]

Official files are pickles that embed optimizer/scheduler objects. Files whose classes are all on
``engine.legacy_checkpoint``'s allow-list load without ``--trust``. ``--trust`` is the explicit opt-in
for files the user trusts that name other classes: every class is then replaced by an inert stand-in
(``weights_only`` stays on, no code of the file runs). The output keeps ``state_dict`` (tensors;
by default without the frozen CLIP ``image_encoder.*``/``text_encoder.*``/``logit_scale`` keys of
MaPLe/COMMA whole-model files), ``epoch`` and ``val_result``; ``optimizer``/``scheduler`` become
``None``. It loads with plain ``torch.load(weights_only=True)`` and with ``--eval-only --model-dir``.
An unreadable input (empty, truncated, not a PyTorch file) or an output that cannot be written is one
``error: ...`` line (exit status 2).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.checkpoint import CheckpointError  # noqa: E402
from engine.legacy_checkpoint import load_official_or_native  # noqa: E402
from engine.utils.io import atomic_torch_save, mkdir_if_missing, os_error_line  # noqa: E402

#: frozen CLIP keys of the official MaPLe/COMMA whole-model checkpoints
FROZEN_PREFIXES = ("image_encoder.", "text_encoder.")
FROZEN_KEYS = ("logit_scale",)


def is_frozen_key(key):
    return key.startswith(FROZEN_PREFIXES) or key in FROZEN_KEYS


def convert(src, dst, trust=False, keep_frozen=False):
    """Convert ``src`` to ``dst``; returns ``(number of tensors kept, number dropped)``."""
    checkpoint = load_official_or_native(src, trust=trust)
    state = checkpoint["state_dict"]
    kept = {k: v.clone() for k, v in state.items() if keep_frozen or not is_frozen_key(k)}
    out = {
        "state_dict": kept,
        "epoch": checkpoint.get("epoch"),
        "optimizer": None,
        "scheduler": None,
        "val_result": checkpoint.get("val_result"),
    }
    if os.path.dirname(dst):
        mkdir_if_missing(os.path.dirname(dst))
    atomic_torch_save(out, dst)
    return len(kept), len(state) - len(kept)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="official checkpoint (e.g. .../MultiModalPromptLearner/model.pth.tar-5)")
    parser.add_argument("dst", help="output file (plain tensors; keep the model.pth.tar-N name for --model-dir)")
    parser.add_argument("--trust", action="store_true",
                        help="accept classes outside the allow-list (replaced by inert stand-ins)")
    parser.add_argument("--keep-frozen", action="store_true", help="keep the frozen CLIP weights in the output")
    args = parser.parse_args(argv)
    try:
        kept, dropped = convert(args.src, args.dst, trust=args.trust, keep_frozen=args.keep_frozen)
    except (ValueError, FileNotFoundError, CheckpointError) as err:  # unreadable input: one line naming it
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the output cannot be written (full disk, permissions, a file in the way)
        print(f"error: {os_error_line(err, args.dst)}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}: {kept} tensors ({dropped} frozen CLIP tensors dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
