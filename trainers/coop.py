"""CoOp (Zhou et al., IJCV 2022): learned context vectors in front of (or around) the class name.

Class ``c``'s prompt is ``t_c = [SOS][v_1 .. v_M][CLASS_c][.][EOS]`` (``CLASS_TOKEN_POSITION``
``end``; ``middle`` and ``front`` move the class tokens, compat note §4.2) and
``p(y=c|x) = softmax_c(exp(s) * cos(f(x), g(t_c)))``. Only ``v`` is learned.

Config node ``TRAINER.COOP``: ``N_CTX`` (M, 16), ``CSC`` (class-specific context, False),
``CTX_INIT`` ("" = random N(0, 0.02); otherwise M = number of words and the vectors start from
their token embeddings; CSC is then ignored), ``CLASS_TOKEN_POSITION`` (end|middle|front),
``PREC``. The registered model (``prompt_learner``) is the prompt learner itself, so the checkpoint
keys are the official ``ctx`` (+ ``token_prefix``/``token_suffix`` buffers, never saved, dropped
at load). ``v`` is fp16 only when the backbone is fp16 (as upstream), fp32 otherwise.
"""
import torch
import torch.nn as nn

from engine.distributed import shard_text_rows
from engine.trainer import TRAINER_REGISTRY
from engine.utils.logger import get_logger
from trainers.base import PromptCLIP, PromptTrainer, build_class_prompts, count_words, init_context_from_text
from trainers.templates import format_classname

logger = get_logger()

POSITIONS = ("end", "middle", "front")


def context_dtype(backbone_dtype):
    """CoOp/CoCoOp context dtype: fp16 where the backbone is fp16 (official pure-fp16 SGD), else fp32."""
    return torch.float16 if backbone_dtype == torch.float16 else torch.float32


def random_context(*shape):
    """Context vectors drawn from N(0, 0.02) in fp32 (CoOp's random initialisation)."""
    ctx = torch.empty(*shape, dtype=torch.float32)
    nn.init.normal_(ctx, std=0.02)
    return ctx


def token_layout(position, n_ctx, name_lens, seq_len):
    """Source index per output position, into the ``end`` layout ``[SOS][ctx][name . EOS pad]``.

    Returns ``LongTensor[C, seq_len]``: ``end`` is the identity; ``front`` gives
    ``[SOS][name][ctx][. EOS pad]``; ``middle`` gives ``[SOS][ctx[:M//2]][name][ctx[M//2:]][. EOS pad]``
    (``name_lens[c]`` = BPE length of class ``c``'s name).
    """
    if position not in POSITIONS:
        raise ValueError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {POSITIONS}, got {position!r}")
    rows = []
    for name_len in name_lens:
        sos, ctx = [0], list(range(1, 1 + n_ctx))
        name = list(range(1 + n_ctx, 1 + n_ctx + name_len))
        rest = list(range(1 + n_ctx + name_len, seq_len))
        if position == "end":
            order = sos + ctx + name + rest
        elif position == "front":
            order = sos + name + ctx + rest
        else:
            half = n_ctx // 2
            order = sos + ctx[:half] + name + ctx[half:] + rest
        rows.append(order)
    return torch.tensor(rows, dtype=torch.long)


class CoOpPromptLearner(nn.Module):
    """Context vectors ``ctx`` ([M, D], or [C, M, D] with CSC) and the fixed class-token embeddings.

    ``forward()`` -> prompt token embeddings ``[C, 77, D]`` (without positional embedding), in the
    context's dtype; ``tokenized_prompts`` [C, 77] locates each EOT token.
    """

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init="", csc=False, position="end"):
        super().__init__()
        n_cls = len(classnames)
        width = clip_model.ln_final.weight.shape[0]
        dtype = context_dtype(clip_model.dtype)
        if ctx_init:
            ctx_init = ctx_init.replace("_", " ")
            n_ctx = len(ctx_init.split(" "))
            ctx = init_context_from_text(clip_model, ctx_init, n_ctx)
            prompt_prefix = ctx_init
            if csc:
                logger.info("CTX_INIT is set: class-specific context (CSC) is ignored")
                csc = False
        else:
            if n_ctx < 1:
                raise ValueError(f"N_CTX must be >= 1 when CTX_INIT is empty, got {n_ctx}")
            ctx = random_context(n_cls, n_ctx, width) if csc else random_context(n_ctx, width)
            prompt_prefix = " ".join(["X"] * n_ctx)
        logger.info(f'Initial context: "{prompt_prefix}"')
        logger.info(f"Number of context words (tokens): {n_ctx}")
        self.ctx = nn.Parameter(ctx.to(dtype))

        tokenized, embedding = build_class_prompts(clip_model, classnames, prompt_prefix)
        self.register_buffer("token_prefix", embedding[:, :1, :].clone())  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :].clone())  # CLASS . EOS pad
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.n_cls, self.n_ctx, self.csc, self.position = n_cls, n_ctx, csc, position
        self.name_lens = [count_words(format_classname(name)) for name in classnames]
        layout = token_layout(position, n_ctx, self.name_lens, tokenized.shape[1])
        self.register_buffer("layout", layout, persistent=False)

    def context(self):
        """The context per class, ``[C, M, D]``."""
        ctx = self.ctx
        return ctx.unsqueeze(0).expand(self.n_cls, -1, -1) if ctx.dim() == 2 else ctx

    def assemble(self, ctx):
        """Prompt embeddings from per-class (or per-image-per-class) context ``[..., C, M, D]``."""
        lead = ctx.shape[:-3]
        prefix = self.token_prefix.to(ctx.dtype).expand(*lead, -1, -1, -1)
        suffix = self.token_suffix.to(ctx.dtype).expand(*lead, -1, -1, -1)
        prompts = torch.cat([prefix, ctx, suffix], dim=-2)
        if self.position != "end":
            index = self.layout.unsqueeze(-1).expand(*lead, -1, -1, prompts.shape[-1])
            prompts = prompts.gather(-2, index)
        return prompts

    def forward(self):
        return self.assemble(self.context())


class CoOpCLIP(PromptCLIP):
    """CLIP whose class text features come from CoOp's learned prompts; images are not prompted."""

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init="", csc=False, position="end"):
        super().__init__(clip_model, classnames)
        self.prompt_learner = CoOpPromptLearner(clip_model, classnames, n_ctx, ctx_init, csc, position)

    def text_features(self):
        return self.text_encoder(self.prompt_learner(), self.prompt_learner.tokenized_prompts)

    def image_features(self, image):
        return self.image_encoder(image)


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    """CoOp trainer (``TRAINER.COOP``); registers the prompt learner as ``prompt_learner``."""

    CFG_NODE = "COOP"
    MODEL_NAME = "prompt_learner"
    REGISTER_PROMPT_LEARNER_ONLY = True

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        position = cfg.TRAINER.COOP.CLASS_TOKEN_POSITION
        if position not in POSITIONS:
            raise ValueError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {POSITIONS}, got {position!r}")

    def build_custom_model(self, clip_model, classnames):
        node = self.cfg.TRAINER.COOP
        return CoOpCLIP(clip_model, classnames, n_ctx=node.N_CTX, ctx_init=node.CTX_INIT,
                        csc=node.CSC, position=node.CLASS_TOKEN_POSITION)

    def forward_backward(self, batch):
        """CE loss and batch accuracy, logged as ``loss`` and ``acc`` (CoOp's log line)."""
        image, label = self.parse_batch_train(batch)
        with self.autocast(), shard_text_rows():
            logits = self.model(image)
            loss = torch.nn.functional.cross_entropy(logits, label)
        self.model_backward_and_update(loss)
        acc = (logits.argmax(dim=1) == label).float().mean().item() * 100.0
        return {"loss": loss.item(), "acc": acc}
