"""CLIP backbone: loading the unmodified OpenAI CLIP and the prompted encoders (docs/BACKBONE.md)."""
from .architectures import ARCHITECTURES, TINY_NAME, get_architecture
from .loader import available_backbones, build_random_clip, load_clip, load_clip_from_state_dict
from .prompted_image import PromptedImageEncoder
from .prompted_text import PromptedTextEncoder
from .tokenizer import tokenize
from .weights import BackboneWeightsNotFound, clip_cache_dir, expected_weights_file, read_state_dict

__all__ = [
    "ARCHITECTURES", "TINY_NAME", "get_architecture",
    "available_backbones", "build_random_clip", "load_clip", "load_clip_from_state_dict",
    "PromptedImageEncoder", "PromptedTextEncoder", "tokenize",
    "BackboneWeightsNotFound", "clip_cache_dir", "expected_weights_file", "read_state_dict",
]
