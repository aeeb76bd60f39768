"""Prompted CLIP image encoder (VPT / IVLP / MaPLe / COMMA vision prompts).

ViT backbones: drives CLIP's own ``conv1``, ``class_embedding``, ``positional_embedding``,
``ln_pre``, ``transformer.resblocks``, ``ln_post`` and ``proj``. The shallow prompt P_v^1 (n
tokens, no positional embedding) is appended after CLS + patches (+ pos-emb), before ``ln_pre``;
before block j (1-based, j = 2..J) the last n tokens are overwritten by P_v^j
(``deep_prompts[j-2]``). Prompts beyond the last block are ignored.
ResNet backbones: no prompts; ``forward(images)`` is ``clip_model.visual(images)``.
OpenCLIP ViTs (``engine.backbone.open_clip_backbone``): the same parts, each block through its own
``forward`` (layer scale, batch-first attention), then open_clip's pooling: ``tok`` = CLS token,
``avg`` = mean over the patch tokens (prompt tokens excluded), ``ln_post`` before or after pooling
as its ``final_ln_after_pool`` says. Patch dropout is inactive (the frozen backbone is in eval mode).
"""
import torch
from torch import nn

from ._clip import VisionTransformer
from ._prompts import prompt_tokens, replace_tokens
from .prompted_text import block_runner

_VIT_PARTS = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")




def input_resolution(visual) -> int:
    """Square image size R of an image tower: OpenAI's ``input_resolution`` or open_clip's ``image_size``."""
    res = getattr(visual, "input_resolution", None)
    if res is None:
        size = visual.image_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        if size[0] != size[1]:
            raise ValueError(f"image encoder: non-square image size {size} is not supported")
        res = size[0]
    return int(res)


class PromptedImageEncoder(nn.Module):
    """``forward(images [B,3,H,W], shallow_prompt=None, deep_prompts=None) -> features [B, E]``.

    Prompts are ``[n, Dv]`` (shared by the batch) or ``[B, n, Dv]``; deep prompts need a shallow
    prompt with the same n. Attributes: ``dtype``, ``width`` and ``layers`` (ViT width and block
    count; ``None`` and 0 for ResNets), ``is_vit``, ``input_resolution``, ``embed_dim``.
    Submodule names equal ``clip_model.visual``'s, so state-dict keys match ``visual.*``.
    """

    def __init__(self, clip_model):
        super().__init__()
        visual = clip_model.visual
        self.is_vit = isinstance(visual, VisionTransformer) or all(hasattr(visual, n) for n in _VIT_PARTS)
        if self.is_vit:
            for name in _VIT_PARTS:
                setattr(self, name, getattr(visual, name))
            self._run_block = block_runner(self.transformer)  # OpenAI CLIP: run_block with no mask
            self.pool_type = getattr(visual, "pool_type", "tok")
            self.final_ln_after_pool = bool(getattr(visual, "final_ln_after_pool", False))
            if getattr(visual, "attn_pool", None) is not None or self.pool_type not in ("tok", "avg"):
                raise ValueError("image encoder: attention pooling / pool type "
                                 f"{self.pool_type!r} is not supported by the prompted image encoder")
        else:
            for name, child in visual.named_children():
                self.add_module(name, child)
            object.__setattr__(self, "_resnet", visual)  # unregistered: its children are ours already
        self.input_resolution = input_resolution(visual)
        self.embed_dim = visual.output_dim

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype = dtype of CLIP's image weights (fp32/fp16/bf16)."""
        return self.conv1.weight.dtype

    @property
    def width(self):
        return self.transformer.width if self.is_vit else None

    @property
    def layers(self) -> int:
        return self.transformer.layers if self.is_vit else 0

    def forward(self, images, shallow_prompt=None, deep_prompts=None):
        deep = list(deep_prompts) if deep_prompts is not None else []
        if not self.is_vit:
            if shallow_prompt is not None or deep:
                raise ValueError("visual prompts need a ViT image encoder; this CLIP backbone has a "
                                 "ResNet image encoder (use a ViT-* MODEL.BACKBONE.NAME)")
            return self._resnet(images.to(self.dtype))
        res = self.input_resolution
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, res, res):
            raise ValueError(f"images: expected shape [B, 3, {res}, {res}] (the backbone's image size), "
                             f"got {list(images.shape)}")
        if deep and shallow_prompt is None:
            raise ValueError("deep_prompts replace the appended prompt tokens; pass a shallow_prompt too")

        x = self.conv1(images.to(self.dtype))  # [B, W, grid, grid]
        b, w = x.shape[:2]
        x = x.reshape(b, w, -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(b, 1, w, dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        n = 0
        if shallow_prompt is not None:
            p = prompt_tokens(shallow_prompt, b, w, x, "shallow_prompt")
            n = p.shape[0]
            x = torch.cat([x, p.permute(1, 0, 2)], dim=1)
        x = self.ln_pre(x)

        x = x.permute(1, 0, 2)  # NLD -> LND
        for i, block in enumerate(self.transformer.resblocks):
            if 1 <= i <= len(deep):
                p = prompt_tokens(deep[i - 1], b, w, x, f"deep_prompts[{i - 1}]")
                if p.shape[0] != n:
                    raise ValueError(f"deep_prompts[{i - 1}]: {p.shape[0]} tokens, expected {n} "
                                     f"(the shallow prompt length)")
                x = replace_tokens(x, x.shape[0] - n, p)  # in place: x is the previous block's output
            x = self._run_block(block, x, None)
        x = x.permute(1, 0, 2)

        if self.pool_type == "avg":  # open_clip: mean over the patch tokens
            tokens = x[:, 1:x.shape[1] - n]
            x = self.ln_post(tokens.mean(dim=1)) if self.final_ln_after_pool else self.ln_post(tokens).mean(dim=1)
        else:  # CLS token (LayerNorm acts per token: before or after pooling is the same)
            x = self.ln_post(x[:, 0, :])
        if self.proj is not None:
            x = x @ self.proj
        return x
