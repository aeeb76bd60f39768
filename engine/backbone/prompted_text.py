"""Prompted CLIP text encoder (MaPLe/COMMA/IVLP deep language prompts; CoOp/CoCoOp prompt embeddings).

Drives CLIP's own ``positional_embedding``, ``transformer.resblocks`` (their ``attn``, ``ln_1``,
``mlp`` and ``ln_2``, with CLIP's causal mask), ``ln_final`` and ``text_projection``; CLIP itself is
not modified. OpenCLIP text towers (``engine.backbone.open_clip_backbone``) are driven the same way,
each block through its own ``forward`` (layer scale, batch-first attention) with the cropped mask.
The caller builds the token embeddings, with the shallow prompt P_t^1 already at positions ``1..n``.

Deep prompts (the hook every method uses): before block j (1-based, j = 2..J) positions ``1..n_j``
are overwritten by ``deep_prompts[j-2]`` (``[n_j, Dt]`` shared by the rows, or ``[R, n_j, Dt]`` one
per row, e.g. class-aware tokens). A ``None`` entry leaves the tokens of that block unchanged, so a
method may prompt chosen blocks only: ``deep_prompts_at({j: P}, layers)`` builds the list (TCP
inserts its class-aware tokens before one block, MaPLe/IVLP before every block 2..J). Prompts may
differ in length; prompts beyond the last block are ignored.

Speed and memory (``engine.backbone.text_plan``): because attention is causal, a pass runs only the
first ``max EOT index + 1`` positions (exact truncation), rows can be encoded in chunks with
activation checkpointing, and in a ``torchrun`` job each rank encodes its share of the rows while
training (``engine.distributed``).
"""
import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine import distributed
from engine.utils.cpu_memory import release_large_frees
from ._prompts import prompt_tokens, replace_tokens
from .text_plan import TextPlan

_DEFAULT_PLAN = contextvars.ContextVar("default_text_plan", default=TextPlan())


@contextlib.contextmanager
def default_text_plan(plan: TextPlan):
    """Text encoders created inside this context start with ``plan`` (trainers: the run's config)."""
    token = _DEFAULT_PLAN.set(plan)
    try:
        yield plan
    finally:
        _DEFAULT_PLAN.reset(token)


def self_attention(attn, h, attn_mask):
    """``attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]`` for CLIP's ``nn.MultiheadAttention``
    on sequence-first ``h`` [L, N, E].

    When ``h`` carries a gradient, ``nn.MultiheadAttention`` takes its general path: one packed
    in-projection, a contiguous copy of q/k/v, ``scaled_dot_product_attention``, the out-projection.
    Here the same in-projection, the same attention call (on q/k/v as strided views of the packed
    projection, no copy) and the same out-projection: bit-identical values and gradients, without
    the copies (and, in the backward pass, the zero-filled [3, L, N, E] buffers per head split).
    Other cases (no gradient: the module's fused inference path; dropout, separate q/k/v weights,
    bias_k, batch-first) call the module itself.
    """
    if not (h.requires_grad and torch.is_grad_enabled()) or not _plain_self_attention(attn):
        return attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
    length, batch, width = h.shape
    heads = attn.num_heads
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).view(length, batch, 3, heads, width // heads)
    q, k, v = qkv.permute(2, 1, 3, 0, 4).unbind(0)  # [N, heads, L, head_dim] each
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    out = out.permute(2, 0, 1, 3).reshape(length * batch, width)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias).view(length, batch, width)


def _plain_self_attention(attn):
    """An ``nn.MultiheadAttention`` whose general path is exactly what :func:`self_attention` computes."""
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.in_proj_weight is not None
            and attn.bias_k is None and attn.bias_v is None and not attn.add_zero_attn and not attn.batch_first
            and (attn.dropout == 0.0 or not attn.training))


def run_block(block, x, attn_mask):
    """CLIP's ``ResidualAttentionBlock.forward`` on sequence-first ``x`` with an explicit (cropped) mask
    (or none: the image tower), attention through :func:`self_attention`."""
    h = block.ln_1(x)
    x = x + self_attention(block.attn, h, attn_mask)
    return x + block.mlp(block.ln_2(x))


def run_open_clip_block(block, x, attn_mask):
    """An open_clip block (``ln_1, attn, ls_1, ln_2, mlp, ls_2``; its own ``forward``) on sequence-first ``x``
    with a batch-first transformer (open_clip's default)."""
    return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)


def run_open_clip_block_seq_first(block, x, attn_mask):
    """An open_clip block of a sequence-first transformer (``batch_first=False``) on sequence-first ``x``."""
    return block(x, attn_mask=attn_mask)


def block_runner(transformer):
    """``f(block, x [L,N,D], mask)`` driving the blocks of ``transformer``: OpenAI CLIP's (no ``batch_first``
    attribute) through :func:`run_block`, open_clip's through their own ``forward`` in their layout."""
    batch_first = getattr(transformer, "batch_first", None)
    if batch_first is None:
        return run_block
    return run_open_clip_block if batch_first else run_open_clip_block_seq_first


def project(x, projection):
    """``x @ text_projection`` (a matrix, OpenAI CLIP and open_clip) or ``text_projection(x)`` (an open_clip
    ``nn.Linear`` with bias); no projection when it is None."""
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection


def projection_dtype_and_dim(projection, width):
    """``(dtype, output width)`` of a text projection (matrix, ``nn.Linear`` or None)."""
    if projection is None:
        return None, width
    if isinstance(projection, nn.Linear):
        return projection.weight.dtype, projection.out_features
    return projection.dtype, projection.shape[1]


def deep_prompts_at(prompts_by_block, layers):
    """The ``deep_prompts`` list that inserts ``prompts_by_block[j]`` before text block ``j`` (1-based,
    ``2 <= j <= layers``) and leaves every other block's tokens unchanged (``None`` entries).

    ``deep_prompts_at({9: P}, 12)`` = ``[None] * 7 + [P]`` (TCP's class-aware tokens before block 9).
    A block outside ``2..layers`` is a one-line ``ValueError`` (block 1 takes the shallow prompt,
    which is part of the embeddings).
    """
    bad = sorted(j for j in prompts_by_block if not (isinstance(j, int) and 2 <= j <= layers))
    if bad:
        raise ValueError(f"deep prompts before text block(s) {bad}: expected blocks 2..{layers} (1-based; block 1 "
                         f"takes the shallow prompt in the embeddings)")
    deep = [None] * (max(prompts_by_block, default=1) - 1)
    for j, prompt in prompts_by_block.items():
        deep[j - 2] = prompt
    return deep


class PromptedTextEncoder(nn.Module):
    """``forward(embeddings [R,L,Dt], tokenized [R,L], deep_prompts=None, return_hidden=0, length=None)``.

    ``deep_prompts``: a list whose entry ``i`` replaces positions ``1..n`` before block ``i + 2``
    (1-based): a ``[n, Dt]`` or ``[R, n, Dt]`` tensor, or ``None`` to leave that block's tokens as
    they are (see :func:`deep_prompts_at`). A list of tensors only is MaPLe's deep prompting.

    Returns projected, un-normalised features ``[R, E]`` taken at the EOT token
    (``tokenized.argmax(-1)``), or ``(features, hidden)`` when ``return_hidden=K > 0``: the outputs
    of the real last K blocks, oldest first, each ``[R, length, Dt]`` (batch-first, before
    ``ln_final``). ``length`` = positions run through the blocks: ``None`` = the longest real prompt
    (max EOT index + 1, at least past the deep prompts), or all ``context_length`` when
    ``plan.truncate`` is off; an int forces that many (e.g. ``context_length`` for a loss over every
    position). Values at positions < length never depend on the positions after them.
    ``last_shape`` = ``(rows, length)`` of the latest pass. Submodule names match the official
    ``TextEncoder`` (same state-dict keys).
    """

    def __init__(self, clip_model, plan: TextPlan = None):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self._run_block = block_runner(self.transformer)
        self.plan = plan if plan is not None else _DEFAULT_PLAN.get()
        causal = torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)
        self.register_buffer("causal_mask", causal, persistent=False)
        self.last_shape = None

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype = dtype of CLIP's text weights (fp32/fp16/bf16)."""
        dtype, _ = projection_dtype_and_dim(self.text_projection, self.width)
        return dtype if dtype is not None else self.transformer.resblocks[0].mlp.c_fc.weight.dtype

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
        return projection_dtype_and_dim(self.text_projection, self.width)[1]

    # ------------------------------------------------------------------------------ public API
    def sequence_length(self, tokenized, deep_prompts=None) -> int:
        """Positions a pass needs: max EOT index + 1 (at least 1 + the longest deep prompt), or
        ``context_length`` when truncation is off."""
        if not self.plan.truncate:
            return self.context_length
        need = int(tokenized.argmax(dim=-1).max().item()) + 1
        for p in deep_prompts or []:
            if p is not None:
                need = max(need, 1 + int(p.shape[-2]))
        return min(need, self.context_length)

    def forward(self, embeddings, tokenized, deep_prompts=None, return_hidden: int = 0, length=None):
        if embeddings.dim() != 3 or tuple(embeddings.shape[1:]) != (self.context_length, self.width):
            raise ValueError(f"embeddings: expected shape [C, {self.context_length}, {self.width}], "
                             f"got {list(embeddings.shape)}")
        if tuple(tokenized.shape) != tuple(embeddings.shape[:2]):
            raise ValueError(f"tokenized: expected shape {list(embeddings.shape[:2])}, got {list(tokenized.shape)}")
        k = int(return_hidden)
        if not 0 <= k <= self.layers:
            raise ValueError(f"return_hidden={return_hidden}: expected 0..{self.layers} (text blocks)")
        deep = list(deep_prompts) if deep_prompts is not None else []
        deep = deep[: max(self.layers - 1, 0)]  # a prompt beyond the last block is never inserted
        eot = tokenized.to(embeddings.device).argmax(dim=-1)
        if length is None:
            length = self.sequence_length(tokenized, deep)
        length = int(length)
        if not 1 <= length <= self.context_length or int(eot.max()) >= length:
            raise ValueError(f"length={length}: expected max EOT index + 1 = {int(eot.max()) + 1} .. "
                             f"{self.context_length}")
        rows = embeddings.shape[0]
        self.last_shape = (rows, length)

        shard = distributed.text_row_shard() if torch.is_grad_enabled() else None
        start, end = distributed.row_range(rows, *shard) if shard else (0, rows)
        features, hidden = self._encode_rows(embeddings, eot, deep, k, length, start, end)
        if shard:
            features = distributed.gather_rows(features, rows)
            hidden = [distributed.gather_rows(h, rows) for h in hidden]
        return (features, hidden) if k else features

    # ------------------------------------------------------------------------------ internals
    def _encode_rows(self, embeddings, eot, deep, k, length, start, end):
        """Features and last-k hidden states of rows ``start:end``, chunked by the plan."""
        rows = end - start
        plan_on = self.plan.active(rows, length)
        step = self.plan.rows_per_chunk(rows, length) if plan_on else max(rows, 1)
        use_checkpoint = plan_on and torch.is_grad_enabled()
        if use_checkpoint and embeddings.device.type == "cpu":
            release_large_frees()  # else freed activations stay resident (about 2x the live tensors)
        if rows == 0:  # a rank with no rows of a tiny class set: empty blocks for the gather
            empty = embeddings.new_zeros((0, length, self.width), dtype=self.dtype)
            return embeddings.new_zeros((0, self.embed_dim), dtype=self.dtype), [empty] * k
        # shared deep prompts as one [R, n, Dt] view: each chunk takes its rows, and the gradient is
        # summed over all rows in one reduction, as without chunks (bit-identical gradients)
        total = embeddings.shape[0]
        deep = [p if p is None or p.dim() == 3 else p.unsqueeze(0).expand(total, -1, -1) for p in deep]
        feats, hiddens = [], []
        for lo in range(start, end, step):
            f, h = self._encode_chunk(embeddings, eot, deep, k, length, lo, min(lo + step, end), use_checkpoint)
            feats.append(f)
            hiddens.append(h)
        if len(feats) == 1:
            return feats[0], hiddens[0]
        hidden = [torch.cat(per_layer, dim=0) for per_layer in zip(*hiddens)] if k else []
        return torch.cat(feats, dim=0), hidden

    def _encode_chunk(self, embeddings, eot, deep, k, length, lo, hi, use_checkpoint):
        dtype = self.dtype
        blocks = self.transformer.resblocks
        n_rows = hi - lo
        x = embeddings[lo:hi, :length].to(dtype) + self.positional_embedding[:length].to(dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND, CLIP's blocks are sequence-first
        mask = self.causal_mask[:length, :length].to(dtype=x.dtype, device=x.device)
        hidden = []
        for i, block in enumerate(blocks):
            if 1 <= i <= len(deep) and deep[i - 1] is not None:  # None: this block's tokens stay
                prompt = deep[i - 1]
                if prompt.dim() == 3 and prompt.shape[0] == embeddings.shape[0]:  # one prompt per row
                    prompt = prompt[lo:hi]
                p = prompt_tokens(prompt, n_rows, self.width, x, f"deep_prompts[{i - 1}]")
                n = p.shape[0]
                if 1 + n > x.shape[0]:
                    raise ValueError(f"deep_prompts[{i - 1}]: {n} tokens do not fit after SOS in {x.shape[0]}")
                # in place unless the previous block's output is one of the returned hidden states
                x = replace_tokens(x, 1, p, in_place=i - 1 < len(blocks) - k)
            if use_checkpoint:
                x = checkpoint(self._run_block, block, x, mask, use_reentrant=False)
            else:
                x = self._run_block(block, x, mask)
            if i >= len(blocks) - k:
                hidden.append(x.permute(1, 0, 2))
        x = self.ln_final(x.permute(1, 0, 2)).to(dtype)
        index = eot[lo:hi]
        features = project(x[torch.arange(n_rows, device=x.device), index], self.text_projection)
        return features, hidden
