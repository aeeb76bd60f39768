"""CLIP backbone: loading the unmodified OpenAI CLIP or an OpenCLIP model, and the prompted encoders
(docs/BACKBONE.md)."""
from .architectures import ARCHITECTURES, TINY_NAME, get_architecture
from .loader import available_backbones, build_random_clip, load_clip, load_clip_from_state_dict
from .prompted_image import PromptedImageEncoder
from .prompted_text import PromptedTextEncoder, deep_prompts_at
from .open_clip_backbone import OpenCLIPBackbone, is_open_clip_name
from .tokenizer import tokenize, tokenizer_for
from .weights import BackboneWeightsNotFound, clip_cache_dir, expected_weights_file, read_state_dict

__all__ = [
    "ARCHITECTURES", "TINY_NAME", "get_architecture",
    "available_backbones", "build_random_clip", "load_clip", "load_clip_from_state_dict",
    "PromptedImageEncoder", "PromptedTextEncoder", "deep_prompts_at", "tokenize", "tokenizer_for",
    "OpenCLIPBackbone", "is_open_clip_name",
    "BackboneWeightsNotFound", "clip_cache_dir", "expected_weights_file", "read_state_dict",
]
