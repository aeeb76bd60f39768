"""CoMMA: co-articulated multi-modal prompt learning (Hu et al., AAAI 2024), node ``TRAINER.COMMA``.

Implements the official code's arithmetic; where it departs from the paper, ``TRAIN_GENERATOR``
chooses (docs/METHODS.md).

* Text branch as MaPLe (``ctx`` from the first ``N_CTX`` words of ``CTX_INIT``, fixed "of a"), deep
  text prompts one Parameter ``compound_prompts_text`` [J-1, n, Dt] ~ N(0, 0.02).
* Vision prompts: P_v^1 = proj(ctx); P_v^j = Phi_j(P_v^{j-1}, P_t^{j-1}) for j = 2..J, with
  Phi(V, T) = MLP(LN(softmax(V fc(T)^T / sqrt(Dv)) fc(T))), MLP = Dv -> Dv/4 -> ReLU -> Dv, no
  residual; Phi_2 = ``compound_prompt_projections_image_base``, Phi_{j>2} =
  ``compound_prompt_projections_image[j-3]``.
* ``TRAIN_GENERATOR`` False (default, the official code): the generated prompts are computed under
  ``no_grad`` from detached inputs and the generator keeps its seeded init (requires_grad False).
  True: fully differentiable, generator trained (paper intent).
* Knowledge loss: L_kd = mean_k [1 - mean_{c,t} cos(H~_{k,c,t}, H^_{k,c,t})] over the real last
  ``LAST_LAYER`` text blocks (before ``ln_final``); targets H^ = the same CLIP without prompts on
  ``template_for(cfg, COMMA_TEMPLATES)`` sentences, computed once per class set and cached outside
  the state dict. Loss = CE + ``WEIGHT`` * L_kd (training only). ``KD_TOKENS all`` (official)
  averages over all 77 positions, so the training text pass runs all of them; ``real`` averages
  over each class's positions up to its EOT token, and the pass is truncated to the longest prompt.
* ``UPSTREAM_NUMERICS`` True with an fp16 backbone: ``ctx``, ``proj`` and Phi_2 are fp16 parameters
  (updated in fp16, as upstream's ``.half()``), and L_kd's cosine runs in the backbone dtype.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.precision import learned_dtype
from engine.utils.logger import get_logger
from trainers.base import PromptTrainer, register_method
from trainers.maple import MultiModalCLIP, check_depth, text_context
from trainers.prompts import ClassSentences, embed_texts, encoder_widths, random_context
from trainers.templates import COMMA_TEMPLATES, format_classname, template_for

logger = get_logger()

METHOD = {
    "key": "comma",
    "trainer": "CoMMA",
    "node": "COMMA",
    "aliases": ("COMMA",),
    "config": {
        "N_CTX": 2,
        "CTX_INIT": "a photo of a",
        "PREC": "fp16",
        "UPSTREAM_NUMERICS": False,  # True: the official fp16 arithmetic
        "PROMPT_DEPTH": 9,
        "WEIGHT": 1.0,  # lambda of L = L_ce + lambda * L_kd
        "LAST_LAYER": 1,  # K: L_kd over the real last K text blocks
        # False: official code (generated vision prompts carry no gradient; generator keeps its seeded
        # init) -- the published numbers. True: the paper's intent (generator trained end to end).
        "TRAIN_GENERATOR": False,
        # L_kd positions: "all" = every context position (official; the training text pass then runs
        # all 77), "real" = each class's positions up to its EOT (the pass is truncated like the others).
        "KD_TOKENS": "all",
    },
    "checkpoint": "MultiModalPromptLearner",
    "b2n_cfg": "vit_b16_c2_ep5_batch4_2ctx",
    "xd_cfg": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
    "order": 70,
}

#: official key of the vision-prompt buffer-parameter; regenerated every forward here, never loaded.
LEGACY_IMAGE_PROMPTS_KEY = "prompt_learner.compound_prompts_image"
#: cosine-similarity eps of the official loss
KD_EPS = 1e-7
#: ``TRAINER.COMMA.KD_TOKENS``: positions L_kd averages over
KD_TOKEN_MODES = ("all", "real")


class PromptGenerator(nn.Module):
    """One co-articulation step Phi(V, T) (official ``attention_transform``).

    ``forward(vision [n, Dv], text [n, Dt]) -> [n, Dv]``: single-head cross-attention with the
    previous vision prompt as query and ``fc(text)`` as key and value, then LayerNorm and a bottleneck
    MLP (reduction 4); no residual.
    """

    def __init__(self, text_width, vision_width, reduction=4):
        super().__init__()
        self.fc = nn.Linear(text_width, vision_width)
        self.ln = nn.LayerNorm(vision_width)
        self.mlp = nn.Sequential(
            nn.Linear(vision_width, vision_width // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(vision_width // reduction, vision_width),
        )
        self.scale = 1.0 / math.sqrt(vision_width)

    def forward(self, vision, text):
        dtype = self.fc.weight.dtype
        key = self.fc(text.to(dtype))
        attn = torch.softmax(vision.to(dtype) @ key.t() * self.scale, dim=-1)
        return self.mlp(self.ln(attn @ key))


class CoMMAPromptLearner(ClassSentences):
    """CoMMA's prompt learner (official parameter keys, minus the ``compound_prompts_image`` buffer)."""

    NODE = "COMMA"

    def __init__(self, cfg, clip_model, classnames):
        super().__init__()
        node = cfg.TRAINER[self.NODE]
        depth, n_ctx = check_depth(self.NODE, node, clip_model)
        text_width, vision_width = encoder_widths(clip_model)
        ctx, prompt_prefix = text_context(clip_model, self.NODE, n_ctx, node.CTX_INIT)
        self.depth = depth
        dtype = learned_dtype(clip_model.dtype, node.get("UPSTREAM_NUMERICS", False))  # upstream: fp16
        self.proj = nn.Linear(text_width, vision_width).to(dtype)
        self.ctx = nn.Parameter(ctx.to(dtype))
        self.compound_prompts_text = nn.Parameter(random_context(depth - 1, n_ctx, text_width))
        self.train_generator = bool(node.TRAIN_GENERATOR)
        if depth >= 2:
            # upstream builds the first generator with half=True; the later ones stay fp32
            self.compound_prompt_projections_image_base = PromptGenerator(text_width, vision_width).to(dtype)
        self.compound_prompt_projections_image = nn.ModuleList(
            [PromptGenerator(text_width, vision_width) for _ in range(depth - 2)]
        )
        if not self.train_generator:
            for param in self.generator_parameters():
                param.requires_grad_(False)
        self.set_sentences(clip_model, classnames, prompt_prefix, n_ctx)

    def generators(self):
        """Phi_2..Phi_J in order (empty for PROMPT_DEPTH 1)."""
        if self.depth < 2:
            return []
        return [self.compound_prompt_projections_image_base, *self.compound_prompt_projections_image]

    def generator_parameters(self):
        return [p for module in self.generators() for p in module.parameters()]

    def text_prompts(self):
        """``(sentence embeddings [C, 77, Dt], deep text prompts [J-1 x (n, Dt)])``."""
        return self.sentence_embeddings(), list(self.compound_prompts_text.unbind(0))

    def _generate(self, shallow, ctx, text_prompts):
        vision, text, deep = shallow, ctx, []
        for generator, next_text in zip(self.generators(), [*text_prompts, None]):
            vision = generator(vision, text)
            deep.append(vision)
            text = next_text
        return deep

    def vision_prompts(self):
        """``(shallow proj(ctx) [n, Dv], deep [P_v^2..P_v^J])``; detached unless TRAIN_GENERATOR."""
        shallow = self.proj(self.ctx)
        text_prompts = list(self.compound_prompts_text.unbind(0))
        if self.train_generator:
            return shallow, self._generate(shallow, self.ctx, text_prompts)
        with torch.no_grad():
            deep = self._generate(shallow.detach(), self.ctx.detach(), [t.detach() for t in text_prompts])
        return shallow, deep


class CoMMACLIP(MultiModalCLIP):
    """Multi-modal CLIP plus CoMMA's knowledge-preservation loss (training objective only)."""

    def __init__(self, cfg, clip_model, classnames):
        super().__init__(clip_model, classnames, CoMMAPromptLearner(cfg, clip_model, classnames))
        node = cfg.TRAINER.COMMA
        self.kd_weight = float(node.WEIGHT)
        self.kd_layers = int(node.LAST_LAYER)
        self.kd_tokens = str(node.get("KD_TOKENS", "all"))
        if self.kd_tokens not in KD_TOKEN_MODES:
            raise ValueError(f"TRAINER.COMMA.KD_TOKENS must be one of {KD_TOKEN_MODES}, got {self.kd_tokens!r}")
        layers = clip_model.transformer.layers
        if not 1 <= self.kd_layers <= layers:
            raise ValueError(f"TRAINER.COMMA.LAST_LAYER must be in 1..{layers} for this backbone, got {self.kd_layers}")
        self.template = template_for(cfg, COMMA_TEMPLATES)
        # template sentences as token embeddings: non-persistent (never saved, rebuilt for new classes)
        kd_tokenized, kd_embedding = embed_texts(clip_model, self.template_sentences())
        self.register_buffer("kd_tokenized", kd_tokenized, persistent=False)
        self.register_buffer("kd_embedding", kd_embedding, persistent=False)
        self._kd_targets = None  # (key, [K x (C, L, Dt)]) -- a cache, deliberately not a buffer

    def template_sentences(self):
        return [self.template.format(format_classname(name)) for name in self.classnames]

    def kd_length(self):
        """Positions of the training text pass: all ``context_length`` (``KD_TOKENS all``, official)
        or the longest real prompt (``KD_TOKENS real``)."""
        if self.kd_tokens == "all":
            return self.text_encoder.context_length
        _, deep = self.prompt_learner.text_prompts()
        return self.text_encoder.sequence_length(self.prompt_learner.tokenized_prompts, deep)

    @torch.no_grad()
    def compute_kd_targets(self, length):
        """Per-token hidden states of the real last K text blocks of the frozen CLIP, no prompts, at
        positions ``0..length-1`` (the template pass runs at least up to its own longest sentence)."""
        run = max(length, self.text_encoder.sequence_length(self.kd_tokenized))
        _, hidden = self.text_encoder(self.kd_embedding, self.kd_tokenized, None, return_hidden=self.kd_layers,
                                      length=run)
        return [h[:, :length].detach() for h in hidden]

    def kd_targets(self, length=None):
        """Cached targets for the current class set and length (rebuilt when classes/device/dtype change)."""
        length = self.text_encoder.context_length if length is None else int(length)
        key = (tuple(self.classnames), self.kd_embedding.device, self.kd_embedding.dtype, length)
        if self._kd_targets is None or self._kd_targets[0] != key:
            self._kd_targets = (key, self.compute_kd_targets(length))
        return self._kd_targets[1]

    def kd_mask(self, length):
        """``[C, length]`` bool: the positions L_kd averages over (all, or up to each class's EOT)."""
        tokenized = self.prompt_learner.tokenized_prompts
        positions = torch.arange(length, device=tokenized.device)
        if self.kd_tokens == "all":
            return torch.ones(tokenized.shape[0], length, dtype=torch.bool, device=tokenized.device)
        return positions.unsqueeze(0) <= tokenized.argmax(dim=-1, keepdim=True)

    def knowledge_loss(self, hidden):
        """L_kd: mean over the K layers of 1 - mean cosine over (class, position).

        ``KD_TOKENS all`` averages over every position of every class (official); ``real`` over each
        class's positions up to and including its EOT token.
        """
        length = hidden[0].shape[1]
        targets = self.kd_targets(length)
        mask = self.kd_mask(length).to(hidden[0].device)
        weight = mask.float() / mask.sum()
        scores = []
        for h, t in zip(hidden, targets):
            h, t = (h, t.to(h.dtype)) if self.upstream_numerics else (h.float(), t.float())
            cos = F.cosine_similarity(h, t, dim=-1, eps=KD_EPS)
            scores.append(1.0 - (cos.mean() if self.kd_tokens == "all" else (cos * weight).sum()))
        return torch.stack(scores).mean()

    def compute_loss(self, image, label):
        text, hidden = self.encode_prompted_text(return_hidden=self.kd_layers, length=self.kd_length())
        logits = self.logits_from(self.image_features(image), text)
        loss_kd = self.knowledge_loss(hidden)
        loss = F.cross_entropy(logits, label) + self.kd_weight * loss_kd
        return loss, self.loss_summary(loss, logits, label, loss_kd=loss_kd.item())

    def load_legacy_state_dict(self, state_dict):
        if LEGACY_IMAGE_PROMPTS_KEY in state_dict:
            state_dict.pop(LEGACY_IMAGE_PROMPTS_KEY)
            logger.info(f"Ignoring {LEGACY_IMAGE_PROMPTS_KEY} of the official checkpoint "
                        "(the deep vision prompts are regenerated from the text prompts every forward)")
        return state_dict


@register_method(METHOD)
class CoMMA(PromptTrainer):
    """CoMMA trainer: loss CE + WEIGHT * L_kd, logged as ``loss`` (total) and ``loss_kd``."""

    def build_custom_model(self, clip_model, classnames):
        return CoMMACLIP(self.cfg, clip_model, classnames)
