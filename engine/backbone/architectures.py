"""Hyper-parameters of every CLIP architecture we can build (``MODEL.BACKBONE.NAME``).

Each entry holds the keyword arguments of ``clip.model.CLIP.__init__``, i.e. exactly what
``clip.model.build_model`` infers from the released checkpoint of that name (vision heads are
derived by CLIP itself: ViT width // 64, ResNet width * 32 // 64; text heads = text width // 64).

``ViT-Tiny/16`` is our own test architecture (no released weights): a 3-block ViT on 32x32
images (patch 16, so 4 patches + CLS), vision width 128 (2 heads), text width 64 (1 head),
3 text blocks, joint embedding 96. Vocabulary 49408 and context 77 are CLIP's, so
``clip.tokenize`` works unchanged. Widths differ on purpose so width mix-ups fail in tests.
"""
import difflib

TINY_NAME = "ViT-Tiny/16"


def _arch(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
          transformer_width, transformer_heads, transformer_layers=12,
          context_length=77, vocab_size=49408):
    return dict(embed_dim=embed_dim, image_resolution=image_resolution,
                vision_layers=vision_layers, vision_width=vision_width,
                vision_patch_size=vision_patch_size, context_length=context_length,
                vocab_size=vocab_size, transformer_width=transformer_width,
                transformer_heads=transformer_heads, transformer_layers=transformer_layers)


ARCHITECTURES = {
    "RN50": _arch(1024, 224, (3, 4, 6, 3), 64, None, 512, 8),
    "RN101": _arch(512, 224, (3, 4, 23, 3), 64, None, 512, 8),
    "RN50x4": _arch(640, 288, (4, 6, 10, 6), 80, None, 640, 10),
    "RN50x16": _arch(768, 384, (6, 8, 18, 8), 96, None, 768, 12),
    "RN50x64": _arch(1024, 448, (3, 15, 36, 10), 128, None, 1024, 16),
    "ViT-B/32": _arch(512, 224, 12, 768, 32, 512, 8),
    "ViT-B/16": _arch(512, 224, 12, 768, 16, 512, 8),
    "ViT-L/14": _arch(768, 224, 24, 1024, 14, 768, 12),
    "ViT-L/14@336px": _arch(768, 336, 24, 1024, 14, 768, 12),
    TINY_NAME: _arch(96, 32, 3, 128, 16, 64, 1, transformer_layers=3),
}


def get_architecture(name: str) -> dict:
    """Return a copy of the ``clip.model.CLIP`` kwargs for backbone ``name``.

    Raises ValueError naming ``MODEL.BACKBONE.NAME``, the available names and a close match.
    """
    if name not in ARCHITECTURES:
        close = difflib.get_close_matches(str(name), list(ARCHITECTURES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"MODEL.BACKBONE.NAME {name!r} is not a known CLIP architecture "
                         f"(available: {', '.join(ARCHITECTURES)}){hint}")
    return dict(ARCHITECTURES[name])


def architecture_from_state_dict(sd) -> dict:
    """Infer the ``CLIP`` kwargs from an OpenAI-format state dict, the way ``clip.model.build_model`` does."""
    if "visual.proj" in sd:
        vision_width = sd["visual.conv1.weight"].shape[0]
        vision_layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        vision_patch_size = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        image_resolution = vision_patch_size * grid
    else:
        vision_layers = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")})
                              for b in (1, 2, 3, 4))
        vision_width = sd["visual.layer1.0.conv1.weight"].shape[0]
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_patch_size = None
        image_resolution = grid * 32
    transformer_width = sd["ln_final.weight"].shape[0]
    return dict(
        embed_dim=sd["text_projection"].shape[1],
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=vision_patch_size,
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        transformer_width=transformer_width,
        transformer_heads=transformer_width // 64,
        transformer_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
    )
