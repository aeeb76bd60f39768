"""Prompted CLIP text encoder (issue 4 item 1; MaPLe/COMMA deep language prompts).

Drives CLIP's own ``positional_embedding``, ``transformer.resblocks`` (with their causal
``attn_mask``), ``ln_final`` and ``text_projection``; CLIP itself is not modified. The caller
builds the token embeddings, with the shallow prompt P_t^1 already at positions ``1..n``.
Before block j (1-based, j = 2..J) positions ``1..n`` are overwritten by the deep prompt P_t^j
(``deep_prompts[j-2]``). Prompts beyond the last block are ignored.
"""
import torch
from torch import nn

from ._prompts import prompt_tokens


class PromptedTextEncoder(nn.Module):
    """``forward(embeddings [C,L,Dt], tokenized [C,L], deep_prompts=None, return_hidden=0)``.

    Returns projected, un-normalised features ``[C, E]`` taken at the EOT token
    (``tokenized.argmax(-1)``), or ``(features, hidden)`` when ``return_hidden=K > 0``: the
    outputs of the real last K blocks, oldest first, each ``[C, L, Dt]`` (batch-first, before
    ``ln_final``). Submodule names match the official ``TextEncoder`` (same state-dict keys).
    """

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype = dtype of CLIP's text weights (fp32/fp16/bf16)."""
        return self.text_projection.dtype

    @property
    def width(self) -> int:
        return self.transformer.width

    @property
    def layers(self) -> int:
        return self.transformer.layers

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.text_projection.shape[1]

    def forward(self, embeddings, tokenized, deep_prompts=None, return_hidden: int = 0):
        if embeddings.dim() != 3 or tuple(embeddings.shape[1:]) != (self.context_length, self.width):
            raise ValueError(f"embeddings: expected shape [C, {self.context_length}, {self.width}], "
                             f"got {list(embeddings.shape)}")
        if tuple(tokenized.shape) != tuple(embeddings.shape[:2]):
            raise ValueError(f"tokenized: expected shape {list(embeddings.shape[:2])}, got {list(tokenized.shape)}")
        blocks = self.transformer.resblocks
        k = int(return_hidden)
        if not 0 <= k <= len(blocks):
            raise ValueError(f"return_hidden={return_hidden}: expected 0..{len(blocks)} (text blocks)")
        deep = list(deep_prompts) if deep_prompts is not None else []
        n_cls = embeddings.shape[0]
        dtype = self.dtype

        x = embeddings.to(dtype) + self.positional_embedding.to(dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND, CLIP's blocks are sequence-first
        hidden = []
        for i, block in enumerate(blocks):
            if 1 <= i <= len(deep):
                p = prompt_tokens(deep[i - 1], n_cls, self.width, x, f"deep_prompts[{i - 1}]")
                n = p.shape[0]
                if 1 + n > x.shape[0]:
                    raise ValueError(f"deep_prompts[{i - 1}]: {n} tokens do not fit after SOS in {x.shape[0]}")
                x = torch.cat([x[:1], p, x[1 + n:]], dim=0)
            x = block(x)
            if i >= len(blocks) - k:
                hidden.append(x.permute(1, 0, 2))
        x = self.ln_final(x.permute(1, 0, 2)).to(dtype)
        eot = tokenized.to(x.device).argmax(dim=-1)
        features = x[torch.arange(n_cls, device=x.device), eot] @ self.text_projection
        return (features, hidden) if k else features
