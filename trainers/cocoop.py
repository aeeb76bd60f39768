"""CoCoOp (Zhou et al., CVPR 2022): CoOp context shifted per image by a light Meta-Net.

``pi(x) = W_2 ReLU(W_1 f̂(x) + b_1) + b_2`` with ``f̂(x)`` the normalised image feature; every context
token of class ``c``'s prompt becomes ``v_m + pi(x)`` and
``p(y=c|x) = softmax_c(exp(s) * cos(f(x), g(t_c(x))))``. The text side therefore depends on the
image: one full class-prompt set per image (no text cache at evaluation). We encode the ``B*C``
prompts in one text-encoder call, chunked over images to bound memory (``MAX_TEXT_SEQUENCES``).

Config node ``TRAINER.COCOOP``: ``N_CTX`` (16), ``CTX_INIT`` ("" = random; otherwise
``n_ctx`` = number of words), ``PREC``. Meta-Net ``Linear(E -> E//16) -> ReLU -> Linear(E//16 -> D)``
named ``meta_net.linear1/relu/linear2`` (official keys); registered as ``prompt_learner``.
Context and Meta-Net are fp16 only where the backbone is fp16 (as upstream). ``UPSTREAM_NUMERICS``:
normalisation and logits in the backbone dtype, as upstream, instead of fp32.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.precision import no_autocast
from trainers.base import PromptCLIP, PromptTrainer, register_method
from trainers.coop import CoOpPromptLearner, context_dtype

METHOD = {
    "key": "cocoop",
    "trainer": "CoCoOp",
    "node": "COCOOP",
    "config": {
        "N_CTX": 16,
        "CTX_INIT": "",
        "PREC": "fp16",
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
    },
    "checkpoint": "prompt_learner",
    "b2n_cfg": "vit_b16_c4_ep10_batch1_ctxv1",
    "xd_cfg": "vit_b16_c4_ep10_batch1_ctxv1",
    "order": 20,
}


def build_meta_net(vis_dim, ctx_dim, dtype):
    """CoCoOp's Meta-Net: ``Linear(vis_dim, vis_dim // 16) -> ReLU -> Linear(vis_dim // 16, ctx_dim)``."""
    hidden = max(1, vis_dim // 16)
    net = nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(vis_dim, hidden)),
        ("relu", nn.ReLU(inplace=True)),
        ("linear2", nn.Linear(hidden, ctx_dim)),
    ]))
    return net.to(dtype)


class CoCoOpPromptLearner(CoOpPromptLearner):
    """CoOp's shared context (``end`` position) plus the Meta-Net; ``forward(f̂ [B, E])`` -> ``[B, C, 77, D]``."""

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init=""):
        super().__init__(clip_model, classnames, n_ctx=n_ctx, ctx_init=ctx_init, csc=False, position="end")
        vis_dim = clip_model.visual.output_dim
        width = clip_model.ln_final.weight.shape[0]
        self.meta_net = build_meta_net(vis_dim, width, context_dtype(clip_model.dtype))

    def forward(self, image_features):
        bias = self.meta_net(image_features.to(self.ctx.dtype))  # [B, D]
        ctx = self.ctx.unsqueeze(0) + bias.unsqueeze(1)  # [B, M, D]: v_m + pi(x)
        ctx = ctx.unsqueeze(1).expand(-1, self.n_cls, -1, -1)  # [B, C, M, D]
        return self.assemble(ctx)


class CoCoOpCLIP(PromptCLIP):
    """CoCoOp model: logits per image from that image's own prompt set (always fp32 logits)."""

    #: upper bound on prompts per text-encoder call (images per call = max(1, this // C)).
    MAX_TEXT_SEQUENCES = 4096

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init=""):
        super().__init__(clip_model, classnames)
        self.prompt_learner = CoCoOpPromptLearner(clip_model, classnames, n_ctx, ctx_init)

    def image_features(self, image):
        return self.image_encoder(image)

    def text_features(self):
        raise RuntimeError("CoCoOp's class text features depend on the image; use forward(image)")

    def forward(self, image):
        img = self.image_features(image)
        img = F.normalize(img if self.upstream_numerics else img.float(), dim=-1)  # [B, E]
        n_cls = self.prompt_learner.n_cls
        per_call = max(1, self.MAX_TEXT_SEQUENCES // n_cls)
        logits = []
        for start in range(0, img.shape[0], per_call):
            chunk = img[start:start + per_call]
            prompts = self.prompt_learner(chunk)  # [b, C, 77, D]
            b = prompts.shape[0]
            tokenized = self.prompt_learner.tokenized_prompts.repeat(b, 1)
            txt = self.text_encoder(prompts.reshape(b * n_cls, *prompts.shape[2:]), tokenized)
            txt = F.normalize(txt if self.upstream_numerics else txt.float(), dim=-1).reshape(b, n_cls, -1)
            if self.upstream_numerics:  # official: (logit_scale * imf_i) @ txt_i.t(), in the backbone dtype
                logits.append(torch.einsum("be,bce->bc", self.logit_scale.exp() * chunk, txt))
            else:
                with no_autocast(chunk.device):  # fp32 logits under amp too
                    logits.append(torch.einsum("be,bce->bc", chunk, txt.float()))
        logits = torch.cat(logits, dim=0)
        return logits if self.upstream_numerics else self.logit_scale.float().exp() * logits


@register_method(METHOD)
class CoCoOp(PromptTrainer):
    """CoCoOp trainer (``TRAINER.COCOOP``); registers the prompt learner as ``prompt_learner``."""

    CACHE_TEXT_AT_EVAL = False
    REGISTER_PROMPT_LEARNER_ONLY = True

    def build_custom_model(self, clip_model, classnames):
        node = self.cfg.TRAINER[self.CFG_NODE]
        return CoCoOpCLIP(clip_model, classnames, n_ctx=node.N_CTX, ctx_init=node.CTX_INIT)
