"""Quiet import of the unmodified OpenAI ``clip`` package.

``clip`` imports the deprecated ``pkg_resources`` at import time, which prints a UserWarning on
every run; we silence exactly that warning and re-export what the backbone package uses.
"""
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*", category=UserWarning)
    import clip  # noqa: E402
    import clip.clip as clip_api  # noqa: E402  (the module that holds _MODELS and _download)
    from clip.model import CLIP, ModifiedResNet, VisionTransformer  # noqa: E402

__all__ = ["clip", "clip_api", "CLIP", "ModifiedResNet", "VisionTransformer"]
