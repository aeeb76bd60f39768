"""Shared plumbing of every CLIP prompt-learning method: the prompted CLIP model and its trainer.

``PromptCLIP`` is the "CustomCLIP" of the official repos, written once: an unmodified CLIP driven by
``engine.backbone``'s prompted encoders, a frozen ``logit_scale`` and a method-specific
``prompt_learner``. Logits are ``exp(logit_scale) * cos(f_image, g_class)`` (CLIP eq., fp32; in the
backbone dtype, with no casts, when ``TRAINER.<node>.UPSTREAM_NUMERICS`` is True, as the official code).
``PromptTrainer`` is the Dassl ``TrainerX`` every method shares: it loads CLIP
(``MODEL.BACKBONE.*``), casts it to ``TRAINER.<node>.PREC``, freezes everything outside
``prompt_learner``, logs ``Trainable parameters: N``, builds the optimiser over the trainable tensors
only, caches class text features once per evaluation, saves only the learned tensors, and reads our
checkpoints as well as the official repos' (``engine.legacy_checkpoint``) in the engine's ``load_model``.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.backbone import PromptedImageEncoder, PromptedTextEncoder, load_clip
from engine.backbone.prompted_text import default_text_plan
from engine.backbone.text_plan import TextPlan
from engine.checkpoint_format import CheckpointError
from engine.distributed import shard_text_rows
from engine.legacy_checkpoint import load_official_or_native
from engine.optim import build_lr_scheduler, build_optimizer
from engine.precision import check_prec, learned_dtype, no_autocast, resolve_precision
from engine.trainer import TRAINER_REGISTRY, TrainerX
from engine.utils.logger import get_logger

logger = get_logger()


def register_method(declaration):
    """Class decorator: register a trainer declared by its module's ``METHOD`` literal.

    Sets ``CFG_NODE`` (``declaration["node"]``), ``MODEL_NAME`` (``declaration["checkpoint"]``, if
    set) and ``METHOD``, and registers the class in ``TRAINER_REGISTRY`` with the declared aliases.
    The class name must equal ``declaration["trainer"]`` (the name the torch-free tools use).
    """
    def deco(cls):
        if cls.__name__ != declaration["trainer"]:
            raise ValueError(f"METHOD trainer {declaration['trainer']!r} does not name the class {cls.__name__}")
        cls.CFG_NODE = declaration["node"]
        if declaration.get("checkpoint"):
            cls.MODEL_NAME = declaration["checkpoint"]
        cls.METHOD = declaration
        return TRAINER_REGISTRY.register(aliases=tuple(declaration.get("aliases", ())))(cls)

    return deco


# ------------------------------------------------------------------------------------ the model
class PromptCLIP(nn.Module):
    """CLIP with prompted encoders; subclasses add ``prompt_learner`` and the two feature methods.

    Contract: ``text_features()`` -> un-normalised class embeddings ``[C, E]``;
    ``image_features(image)`` -> un-normalised image embeddings ``[B, E]``; ``forward(image)`` -> fp32
    logits ``[B, C]`` (always logits, in train and eval mode alike). ``upstream_numerics`` (set by the
    trainer from ``TRAINER.<node>.UPSTREAM_NUMERICS``): normalisation, logits and loss in the dtype of
    the features (the backbone's), as the official code, instead of fp32.
    """

    #: state-dict key suffixes that depend on the class names; never saved, dropped when loading.
    CLASS_DEPENDENT_KEYS = ("token_prefix", "token_suffix")
    #: log the batch accuracy ``acc`` next to the loss (CoOp's log line)
    LOG_ACCURACY = False

    def __init__(self, clip_model, classnames):
        super().__init__()
        self.classnames = list(classnames)
        self.image_encoder = PromptedImageEncoder(clip_model)
        self.text_encoder = PromptedTextEncoder(clip_model)
        self.logit_scale = nn.Parameter(clip_model.logit_scale.detach().clone(), requires_grad=False)
        self.dtype = clip_model.dtype
        self._text_cache = None
        self.upstream_numerics = False

    # -- to implement
    def text_features(self):
        raise NotImplementedError

    def image_features(self, image):
        raise NotImplementedError

    # -- provided
    def forward_features(self, image):
        """``(image features, text features)``, both un-normalised; override to share prompt computation."""
        return self.image_features(image), self.text_features()

    def logits_from(self, image_features, text_features, normalized_text=False):
        """``exp(logit_scale) * cos`` in fp32, autocast (``amp``) included (upstream numerics: in the
        features' dtype, no casts, under autocast when it is on, as upstream)."""
        if self.upstream_numerics:  # official: x / x.norm(), logit_scale.exp() * img @ txt.t()
            img = F.normalize(image_features, dim=-1)
            txt = text_features if normalized_text else F.normalize(text_features, dim=-1)
            return self.logit_scale.exp() * img @ txt.t()
        with no_autocast(image_features.device):
            img = F.normalize(image_features.float(), dim=-1)
            txt = text_features if normalized_text else F.normalize(text_features.float(), dim=-1)
            return self.logit_scale.float().exp() * img @ txt.t()

    def forward(self, image):
        if self._text_cache is not None:
            return self.logits_from(self.image_features(image), self._text_cache, normalized_text=True)
        img, txt = self.forward_features(image)
        return self.logits_from(img, txt)

    def compute_loss(self, image, label):
        """The training objective (the only one: the trainer calls nothing else to train).

        Default ``L = CE(logits, label)``. Returns ``(loss, {"loss": float, ...})``; with
        ``LOG_ACCURACY`` the summary also holds the batch accuracy ``acc`` in percent. A method whose
        update needs the gradient of each loss (gradient surgery) returns ``({name: loss, ...},
        summary)`` instead; its trainer then combines the per-loss gradients in ``combine_gradients``
        (``engine.training.update_step``).
        """
        logits = self.forward(image)
        loss = F.cross_entropy(logits, label)
        return loss, self.loss_summary(loss, logits, label)

    def loss_summary(self, loss, logits, label, **terms):
        """``{"loss": L, **terms}`` as floats, plus ``acc`` (percent) when ``LOG_ACCURACY``."""
        summary = {"loss": loss.item(), **{k: float(v) for k, v in terms.items()}}
        if self.LOG_ACCURACY:
            summary["acc"] = (logits.argmax(dim=1) == label).float().mean().item() * 100.0
        return summary

    @torch.no_grad()
    def cache_text_features(self):
        """Compute the normalised class text features once (used until ``clear_text_cache``)."""
        text = self.text_features()
        self._text_cache = F.normalize(text if self.upstream_numerics else text.float(), dim=-1)

    def clear_text_cache(self):
        self._text_cache = None

    def load_legacy_state_dict(self, state_dict):
        """Hook: map an official checkpoint's key names to ours (default: unchanged)."""
        return state_dict


# ------------------------------------------------------------------------------ precision helpers
def upstream_numerics_enabled(cfg, node_name):
    """``TRAINER.<node_name>.UPSTREAM_NUMERICS`` as a bool (False when the node or key is absent)."""
    node = cfg.TRAINER.get(node_name) if node_name else None
    return bool(node.get("UPSTREAM_NUMERICS", False)) if node is not None else False


def cast_clip(clip_model, dtype):
    """Cast CLIP's matmul weights to ``dtype`` the way OpenAI's ``convert_weights`` does for fp16.

    Conv/Linear/attention weights and the two projections take ``dtype``; LayerNorms, embeddings and
    ``logit_scale`` stay fp32 (CLIP's LayerNorm computes in fp32 and casts back), so fp16/bf16 runs
    match the official fp16 CLIP. fp32 leaves the model untouched.
    """
    if dtype == torch.float32:
        return clip_model.float()

    def _cast(module):
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.to(dtype)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)
        if isinstance(module, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                         "in_proj_bias", "bias_k", "bias_v"):
                tensor = getattr(module, attr)
                if tensor is not None:
                    tensor.data = tensor.data.to(dtype)
        for name in ("text_projection", "proj"):
            attr = getattr(module, name, None)
            if isinstance(attr, torch.Tensor):
                attr.data = attr.data.to(dtype)

    clip_model.apply(_cast)
    return clip_model


# ---------------------------------------------------------------------------------- the trainer
class PromptTrainer(TrainerX):
    """Dassl ``TrainerX`` for CLIP prompt learning (see module docstring).

    Class attributes: ``CFG_NODE`` (``TRAINER.<node>`` holding ``PREC``), ``MODEL_NAME`` (registered
    name = checkpoint folder, as upstream), ``CACHE_TEXT_AT_EVAL`` (text features once per
    evaluation), ``REGISTER_PROMPT_LEARNER_ONLY`` (CoOp/CoCoOp register the prompt learner module,
    the others the whole model with ``prompt_learner.`` keys, as upstream).
    """

    CFG_NODE = None
    MODEL_NAME = "prompt_learner"
    CACHE_TEXT_AT_EVAL = True
    REGISTER_PROMPT_LEARNER_ONLY = False

    # -- hooks for subclasses
    def build_custom_model(self, clip_model, classnames):
        raise NotImplementedError

    @property
    def upstream_numerics(self):
        """``TRAINER.<CFG_NODE>.UPSTREAM_NUMERICS`` (False without a node)."""
        return upstream_numerics_enabled(self.cfg, self.CFG_NODE)

    def learned_dtype(self, clip_model):
        """dtype of the tensors the official code learns in CLIP's dtype (``engine.precision.learned_dtype``)."""
        return learned_dtype(clip_model.dtype, self.upstream_numerics)

    def trainable_parameters(self):
        """``[(name, parameter)]`` that the optimiser updates (default: those with ``requires_grad``)."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    # -- Dassl hooks
    @property
    def prec(self):
        """The ``PREC`` this trainer runs with (``prec_name``: ``TRAINER.<CFG_NODE>.PREC``, else fp32)."""
        return self.prec_name(self.cfg)

    def check_cfg(self, cfg):
        if self.CFG_NODE:
            check_prec(cfg.TRAINER[self.CFG_NODE].PREC, f"TRAINER.{self.CFG_NODE}.PREC")

    def build_model(self):
        cfg = self.cfg
        precision = getattr(self, "precision", None) or resolve_precision(self.prec, self.device)
        self.precision = precision
        logger.info(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip(cfg)
        cast_clip(clip_model, precision.param_dtype)
        clip_model.to(self.device)

        logger.info("Building custom CLIP")
        plan = TextPlan.from_cfg(cfg)
        logger.info(f"Text encoder: truncation {'on' if plan.truncate else 'off'}, memory plan {plan.memory_plan} "
                    f"(chunk size {plan.chunk_size or 'auto'}, auto above {plan.auto_tokens:,} tokens per pass)")
        with default_text_plan(plan):
            self.model = self.build_custom_model(clip_model, self.classnames)
        self.model.to(self.device)
        self.model.upstream_numerics = self.upstream_numerics
        if self.upstream_numerics:
            logger.info(f"TRAINER.{self.CFG_NODE}.UPSTREAM_NUMERICS: the official code's arithmetic "
                        f"(logits, normalisation and loss in {clip_model.dtype}; see docs/METHODS.md)")
        for name, param in self.model.named_parameters():
            if not name.startswith("prompt_learner."):
                param.requires_grad_(False)

        trainable = self.trainable_parameters()
        logger.info(f"Parameters to be updated: {sorted(n for n, _ in trainable)}")
        low = sorted(f"{n} ({str(p.dtype).replace('torch.', '')})" for n, p in trainable if p.dtype != torch.float32)
        if low:
            logger.info(f"Learned without an fp32 master copy (as upstream): {', '.join(low)}")
        logger.info(f"Trainable parameters: {sum(p.numel() for _, p in trainable):,}")
        self.optim = self.sched = None
        if not trainable:  # nothing learned (zero-shot): the engine evaluates instead of training
            logger.info(f"{type(self).__name__} learns nothing: no model is registered, saved or loaded")
            if cfg.MODEL.INIT_WEIGHTS:
                logger.info(f"MODEL.INIT_WEIGHTS {cfg.MODEL.INIT_WEIGHTS} is ignored: nothing is learned")
            return
        self.optim = build_optimizer([p for _, p in trainable], cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        module = self.model.prompt_learner if self.REGISTER_PROMPT_LEARNER_ONLY else self.model
        self.register_model(self.MODEL_NAME, module, self.optim, self.sched)
        if cfg.MODEL.INIT_WEIGHTS:
            self.load_init_weights(cfg.MODEL.INIT_WEIGHTS)

    def load_init_weights(self, path):
        """``MODEL.INIT_WEIGHTS``: initialise the learned tensors from a checkpoint file (ours or official)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MODEL.INIT_WEIGHTS: no file at {path}")
        checkpoint = self.read_checkpoint(path)
        self.load_state_dict_from_checkpoint(self.MODEL_NAME, checkpoint["state_dict"], source=path)
        logger.info(f'Initialised {self.MODEL_NAME} from "{path}"')

    def set_model_mode(self, mode="train", names=None):
        """As Dassl, but the frozen CLIP encoders always stay in eval mode (matters for RN BatchNorm)."""
        super().set_model_mode(mode, names)
        self.model.image_encoder.eval()
        self.model.text_encoder.eval()

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        with self.autocast(), shard_text_rows():
            loss, summary = self.model.compute_loss(image, label)
        self.loss_terms = summary  # named in the one-line error of a non-finite loss
        if isinstance(loss, dict):  # several losses: one gradient each, combined by combine_gradients
            self.update_step(loss)
        else:
            self.model_backward_and_update(loss)
        return summary

    def model_inference(self, image):
        with self.autocast():
            return self.model(image)

    def before_evaluation(self):
        if self.CACHE_TEXT_AT_EVAL:
            with self.autocast():
                self.model.cache_text_features()

    def after_evaluation(self):
        self.model.clear_text_cache()

    # -- checkpoints: one key policy for saving, loading and the expected keys
    def learned_state(self, name, state):
        """The entries of ``state`` that a checkpoint of model ``name`` holds: keys under
        ``prompt_learner.`` (when the whole model is registered), minus the class-dependent buffers
        (``PromptCLIP.CLASS_DEPENDENT_KEYS``, rebuilt from the class names of the run)."""
        whole = self._models[name] is self.model
        return {k: v for k, v in state.items()
                if (not whole or k.startswith("prompt_learner."))
                and k.rsplit(".", 1)[-1] not in self.model.CLASS_DEPENDENT_KEYS}

    def state_dict_for_checkpoint(self, name):
        """Only the learned tensors (:meth:`learned_state` of the registered module's state dict)."""
        return self.learned_state(name, self._models[name].state_dict())

    def load_state_dict_from_checkpoint(self, name, state_dict, source="checkpoint"):
        """Load a (possibly official, whole-model) state dict into registered model ``name``.

        Official key names are mapped by the model's ``load_legacy_state_dict``; class-dependent
        buffers and frozen CLIP weights are dropped; a missing learned tensor, or one the model does not
        have (another method's checkpoint), is a ``CheckpointError`` naming the keys.
        """
        module = self._models[name]
        state = self.model.load_legacy_state_dict(dict(state_dict))
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        if module is self.model:
            frozen = [k for k in state if not k.startswith("prompt_learner.")]
            if frozen:
                logger.info(f"Ignoring {len(frozen)} frozen CLIP tensors in {source}")
        state = self.learned_state(name, state)
        expected = list(self.state_dict_for_checkpoint(name))
        if expected and not any(k in state for k in expected):
            raise ValueError(f"{source} holds none of the tensors of {name} (expected e.g. {expected[:3]})")
        missing = [k for k in expected if k not in state]
        if missing:  # another method's checkpoint, or one missing learned tensors: never evaluate half of it
            raise CheckpointError(f"{source} does not fit {name} of {type(self).__name__}: {len(missing)} of its "
                                  f"{len(expected)} learned tensors are missing ({', '.join(missing[:4])}"
                                  f"{', ...' if len(missing) > 4 else ''}); is it another method's checkpoint?")
        own = set(module.state_dict())
        unexpected = [k for k in state if k not in own]
        if unexpected:  # learned tensors this model does not have: another method's (or setting's) checkpoint
            raise CheckpointError(f"{source} does not fit {name} of {type(self).__name__}: it holds "
                                  f"{len(unexpected)} learned tensor(s) this model does not have "
                                  f"({', '.join(unexpected[:4])}"
                                  f"{', ...' if len(unexpected) > 4 else ''}); is it another method's checkpoint?")
        try:
            result = module.load_state_dict(state, strict=False)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise ValueError(f"{source} does not fit {name}: {' '.join(first[1:3]) or first[0]}") from None
        if result.unexpected_keys:
            logger.warning(f"Unexpected keys in {source} (ignored): {result.unexpected_keys}")

    def read_checkpoint(self, path):
        """Our checkpoints and the official CoOp/CoCoOp/MaPLe/COMMA ones (safe, allow-listed loader)."""
        return load_official_or_native(path)
