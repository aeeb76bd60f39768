"""Python API: a prompt-learning model, trained or not, without any dataset (docs/API.md).

    from engine.api import build_model, load_model
    model = build_model("CoOp", ["cat", "dog"], backbone="ViT-B/16")       # as built (zero-shot: ready)
    model = load_model("output/b2n/CoOp/.../seed1", ["cat", "dog"])         # a trained run folder
    probs = model.predict(images)            # [B, C] softmax over the class names
    text = model.text_features()             # [C, E], L2-normalised
    feats = model.image_features(images)     # [B, E], L2-normalised

The model is the method's registered trainer, built through its normal ``__init__`` with the class
names given instead of a dataset (so freezing, precision, checkpoints and official-checkpoint loading
are the ones ``train.py`` uses). Config: defaults -> the trainer nodes -> ``config`` (a YAML file) ->
``backbone`` -> ``opts`` (``{"KEY.NAME": value}``). ``INPUT.SIZE``, ``INPUT.PIXEL_MEAN``,
``INPUT.PIXEL_STD``, ``INPUT.INTERPOLATION`` and ``INPUT.TRANSFORMS`` that neither ``config`` nor
``opts`` set follow the backbone (its image size and the normalisation its weights were trained
with). ``load_model`` rebuilds the config a run recorded in ``run_record.json`` (``engine.runs.record``).
"""
import contextlib
import logging
import os

import torch
import torch.nn.functional as F

__all__ = ["build_model", "load_model", "from_config", "PromptModel", "backbone_input_defaults", "make_config"]

#: the normalisation of OpenAI's CLIP (and OpenCLIP's default)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_BACKBONE = "ViT-B/16"
_INPUT_KEYS = ("INPUT.SIZE", "INPUT.PIXEL_MEAN", "INPUT.PIXEL_STD", "INPUT.INTERPOLATION", "INPUT.TRANSFORMS")


# ------------------------------------------------------------------------------ config
def backbone_input_defaults(name: str, pretrained="") -> dict:
    """``{"INPUT.SIZE": (R, R), "INPUT.PIXEL_MEAN": [...], ...}`` for backbone ``name`` (empty when unknown)."""
    from engine.backbone import ARCHITECTURES
    from engine.backbone.open_clip_backbone import architecture_of, default_preprocess, is_open_clip_name

    if is_open_clip_name(name):
        pre = default_preprocess(architecture_of(name), pretrained if isinstance(pretrained, str) else "")
        size, mean, std, interp = pre["size"], pre["mean"], pre["std"], pre["interpolation"]
    elif name in ARCHITECTURES:
        size, mean, std, interp = ARCHITECTURES[name]["image_resolution"], CLIP_MEAN, CLIP_STD, "bicubic"
    else:
        return {}
    return {"INPUT.SIZE": (int(size), int(size)), "INPUT.PIXEL_MEAN": [float(v) for v in mean],
            "INPUT.PIXEL_STD": [float(v) for v in std], "INPUT.INTERPOLATION": interp,
            "INPUT.TRANSFORMS": ["random_resized_crop", "random_flip", "normalize"]}


def weights_file_input_defaults(path: str) -> dict:
    """:func:`backbone_input_defaults` for the OpenAI-format CLIP weights file ``path``
    (``MODEL.BACKBONE.PATH``): its image size is read from the file, normalisation is CLIP's."""
    from engine.backbone.architectures import architecture_from_state_dict
    from engine.backbone.weights import read_state_dict

    try:
        size = int(architecture_from_state_dict(read_state_dict(path))["image_resolution"])
    except KeyError as err:
        raise ValueError(f"MODEL.BACKBONE.PATH {path}: not an OpenAI CLIP state dict "
                         f"(missing {err.args[0]!r})") from None
    return {"INPUT.SIZE": (size, size), "INPUT.PIXEL_MEAN": list(CLIP_MEAN), "INPUT.PIXEL_STD": list(CLIP_STD),
            "INPUT.INTERPOLATION": "bicubic", "INPUT.TRANSFORMS": ["random_resized_crop", "random_flip", "normalize"]}


def backbone_label(cfg) -> str:
    """What the model's backbone is, by what was loaded: ``<weights file> (image size R)`` for
    ``MODEL.BACKBONE.PATH``, ``<NAME> (random weights)``, else ``MODEL.BACKBONE.NAME``."""
    bb = cfg.MODEL.BACKBONE
    if bb.RANDOM_INIT:
        return f"{bb.NAME} (random weights)"
    if bb.PATH:
        return f"{os.path.basename(bb.PATH)} (weights file, image size {int(cfg.INPUT.SIZE[0])})"
    return str(bb.NAME)


def _resolve_config(config):
    """``config`` as given when it exists, else relative to the repository (so that the documented
    ``configs/trainers/...`` paths work from any folder after ``pip install -e .``)."""
    if not config or os.path.isfile(config) or os.path.isabs(config):
        return config
    in_repo = os.path.join(REPO_ROOT, config)
    return in_repo if os.path.isfile(in_repo) else config


def _flat_opts(opts) -> list:
    """``{"A.B": v}`` (``A__B`` accepted too) or ``[K, V, ...]`` -> ``[K, V, ...]``."""
    if isinstance(opts, dict):
        out = []
        for key, value in opts.items():
            out += [key.replace("__", "."), value]
        return out
    return list(opts or [])


def _yaml_keys(path) -> set:
    """Dotted keys set by the YAML file ``path`` (empty when there is none)."""
    if not path:
        return set()
    import yaml

    from engine.runs.record import flatten_cfg

    with open(path, "r", encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return set(flatten_cfg(data)) if isinstance(data, dict) else set()


def _set_settings(cfg, settings: dict) -> None:
    """Assign recorded ``{"A.B.C": value}`` settings to ``cfg`` (keys it does not have are skipped)."""
    for key, value in settings.items():
        if key.startswith("--"):
            continue
        node, parts = cfg, key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if hasattr(node, "get") else None
            if node is None:
                break
        if node is None or not hasattr(node, "get") or parts[-1] not in node:
            continue
        default = node[parts[-1]]
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        node[parts[-1]] = value


def make_config(method, backbone=None, config=None, opts=None, settings=None, device=None):
    """The frozen run config (see the module docstring); ``settings`` = a run record's recorded settings."""
    import trainers  # noqa: F401  (registers every method)
    from engine.config import get_cfg_default
    from engine.config.setup import merge_from_file, merge_from_list, validate_cfg
    from trainers.config import extend_cfg

    config = _resolve_config(config)
    if config and not os.path.isfile(config):
        raise FileNotFoundError(f"config file not found: {config} (nor under the repository {REPO_ROOT})")
    flat = _flat_opts(opts)

    def assemble(fill):
        cfg = get_cfg_default()
        extend_cfg(cfg)
        if settings:
            _set_settings(cfg, settings)
        if config:
            merge_from_file(cfg, config)
        if method:
            cfg.TRAINER.NAME = method
        if backbone:
            cfg.MODEL.BACKBONE.NAME = backbone
        if not cfg.MODEL.BACKBONE.NAME:
            cfg.MODEL.BACKBONE.NAME = DEFAULT_BACKBONE
        merge_from_list(cfg, fill + flat)
        if device is not None:
            cfg.USE_CUDA = str(device).startswith("cuda")
        return cfg

    cfg = assemble([])
    if not settings:  # a recorded run keeps its own INPUT settings
        given = _yaml_keys(config) | set(flat[0::2])
        bb = cfg.MODEL.BACKBONE
        if bb.PATH and not bb.RANDOM_INIT and not str(bb.NAME).startswith("open_clip:"):
            defaults = weights_file_input_defaults(bb.PATH)  # the file decides, not the (default) name
            given.discard("INPUT.SIZE")  # nor a method YAML written for another backbone; opts still do
            if "INPUT.SIZE" in flat[0::2]:
                given.add("INPUT.SIZE")
        else:
            defaults = backbone_input_defaults(bb.NAME, bb.PRETRAINED)
        fill = []
        for key, value in defaults.items():
            if key not in given:
                fill += [key, value]
        if fill:
            cfg = assemble(fill)
    validate_cfg(cfg)
    cfg.freeze()
    return cfg


# ------------------------------------------------------------------------------ trainers without data
def _dataless(cls, classnames):
    """``cls`` whose ``build_data_loader`` only sets the class names (no dataset, no loaders)."""

    def build_data_loader(self):
        self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = None
        self.dm = None
        self.num_classes = len(classnames)
        self.num_source_domains = 1
        self.lab2cname = dict(enumerate(classnames))
        self.classnames = list(classnames)

    return type(cls.__name__, (cls,), {"build_data_loader": build_data_loader, "__doc__": cls.__doc__})


@contextlib.contextmanager
def _quiet(verbose):
    """The harness logger at WARNING unless ``verbose``."""
    from engine.utils.logger import get_logger

    logger = get_logger()
    old = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def _check_classnames(classnames):
    names = [str(c) for c in (classnames or [])]
    if not names or any(not n.strip() for n in names):
        raise ValueError("classnames: expected a non-empty list of non-empty class names")
    return names


def _build_trainer(cfg, classnames, verbose):
    from engine.trainer import TRAINER_REGISTRY

    cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    with _quiet(verbose):
        if cfg.SEED >= 0:  # the prompts' random initialisation, without touching the caller's RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.SEED)
                return _dataless(cls, classnames)(cfg)
        return _dataless(cls, classnames)(cfg)


def from_config(cfg, classnames, verbose=False):
    """The method of the frozen config ``cfg`` (``TRAINER.NAME``) for ``classnames``, as built."""
    names = _check_classnames(classnames)
    return PromptModel(_build_trainer(cfg, names, verbose), names)


def build_model(method, classnames, backbone=None, config=None, device=None, verbose=False, **opts):
    """The method ``method`` (a registered trainer name or alias) for ``classnames``, as built
    (learned tensors at their initialisation; zero-shot CLIP is ready to use).

    ``backbone``: ``MODEL.BACKBONE.NAME`` (default: the config's, else ViT-B/16); ``config``: a method
    YAML (e.g. ``configs/trainers/CoOp/vit_b16_ep50.yaml``); ``device``: ``"cpu"`` / ``"cuda"``
    (default: ``USE_CUDA``); ``opts``: config keys, ``**{"MODEL.BACKBONE.RANDOM_INIT": True}``.
    """
    names = _check_classnames(classnames)
    cfg = make_config(method, backbone=backbone, config=config, opts=opts, device=device)
    return PromptModel(_build_trainer(cfg, names, verbose), names)


def load_model(model_dir, classnames, epoch=None, trainer=None, config=None, device=None, verbose=False, **opts):
    """A trained run folder (``train.py``'s ``--output-dir``, or an official repo's) for ``classnames``.

    The config is the one recorded in ``model_dir/run_record.json``; folders without a record need
    ``trainer`` (and ``config`` / ``opts`` as the run was trained with). ``epoch``: the checkpoint
    ``model.pth.tar-<epoch>`` (default: the best, else the last one), as ``--load-epoch``.
    """
    from engine.runs.record import RECORD_FILE, read_record

    names = _check_classnames(classnames)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    record = read_record(model_dir)
    entry = record.get("train") or record.get("eval") or {}
    settings = entry.get("settings") or {}
    method = trainer or settings.get("TRAINER.NAME")
    if not method:
        raise ValueError(f"{model_dir} has no {RECORD_FILE}: pass trainer= (and config= / the opts the run was "
                         f"trained with)")
    cfg = make_config(method, config=config, opts=opts, settings=settings, device=device)
    built = _build_trainer(cfg, names, verbose)
    with _quiet(verbose):
        built.load_model(model_dir, epoch=epoch)
    return PromptModel(built, names)


# ------------------------------------------------------------------------------ the model
class PromptModel:
    """A built or loaded method, ready for inference (eval mode).

    ``predict(images)`` -> class probabilities ``[B, C]`` (fp32, CPU); ``logits(images)``;
    ``topk(images, k)`` -> per image ``[(classname, probability), ...]``; ``text_features()`` ->
    ``[C, E]`` and ``image_features(images)`` -> ``[B, E]`` (L2-normalised unless ``normalize=False``).
    ``images``: PIL images, or float tensors in [0, 1] (``[3, H, W]``, ``[B, 3, H, W]`` or a list);
    preprocessing is the run's test transform (resize the shorter side, centre crop to
    ``INPUT.SIZE``, normalise with ``INPUT.PIXEL_MEAN/STD`` when ``INPUT.TRANSFORMS`` lists
    ``normalize``). Attributes: ``trainer`` (the method's trainer), ``network`` (its ``nn.Module``),
    ``cfg``, ``classnames``, ``device``.
    """

    def __init__(self, trainer, classnames):
        self.trainer = trainer
        self.cfg = trainer.cfg
        self.classnames = list(classnames)
        self.device = trainer.device
        self._pil_transform = None
        trainer.set_model_mode("eval")

    @property
    def network(self):
        return self.trainer.model

    @property
    def backbone(self) -> str:
        """The backbone by what was loaded (:func:`backbone_label`)."""
        return backbone_label(self.cfg)

    def __repr__(self):
        return (f"PromptModel({self.cfg.TRAINER.NAME}, backbone {self.backbone}, "
                f"{len(self.classnames)} classes, {self.device})")

    # -- preprocessing
    def _normalise(self):
        return "normalize" in self.cfg.INPUT.TRANSFORMS

    def _pil(self, image):
        if self._pil_transform is None:
            from engine.data.transforms import build_transform

            with _quiet(False):
                tfm = build_transform(self.cfg, is_train=False)
            if tfm is None:
                import torchvision.transforms as T

                tfm = T.ToTensor()
            self._pil_transform = tfm
        from engine.data.image_modes import to_rgb  # every mode with its real range (16-bit, float, ...)

        return self._pil_transform(to_rgb(image))

    def _tensor(self, image):
        import torchvision.transforms.functional as TF

        from engine.data.transforms import INTERPOLATION_MODES

        size = tuple(int(s) for s in self.cfg.INPUT.SIZE)
        x = image.float()
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"images: expected RGB tensors [3, H, W] or [B, 3, H, W] in [0, 1], "
                             f"got {list(image.shape)}")
        if tuple(x.shape[1:]) != size:
            interp = INTERPOLATION_MODES.get(self.cfg.INPUT.INTERPOLATION)
            x = TF.center_crop(TF.resize(x, max(size), interpolation=interp, antialias=True), list(size))
        if self._normalise():
            x = TF.normalize(x, list(self.cfg.INPUT.PIXEL_MEAN), list(self.cfg.INPUT.PIXEL_STD))
        return x

    def preprocess(self, images) -> torch.Tensor:
        """``images`` (see the class docstring) -> the model's input batch ``[B, 3, R, R]`` (CPU)."""
        if isinstance(images, torch.Tensor):
            items = list(images) if images.dim() == 4 else [images]
        elif isinstance(images, (list, tuple)):
            items = list(images)
        else:
            items = [images]
        if not items:
            raise ValueError("images: expected at least one image")
        out = []
        for item in items:
            if isinstance(item, torch.Tensor):
                out.append(self._tensor(item))
            elif hasattr(item, "convert"):
                out.append(self._pil(item))
            else:
                raise ValueError(f"images: expected PIL images or tensors, got {type(item).__name__}")
        return torch.stack(out)

    # -- inference
    @contextlib.contextmanager
    def _evaluating(self):
        """Eval mode with the trainer's evaluation hooks (class text features cached once per call)."""
        self.trainer.set_model_mode("eval")
        with torch.no_grad():
            self.trainer.before_evaluation()
            try:
                yield
            finally:
                self.trainer.after_evaluation()

    def _batches(self, images, batch_size):
        x = self.preprocess(images)
        step = int(batch_size or self.cfg.DATALOADER.TEST.BATCH_SIZE or len(x))
        for lo in range(0, len(x), step):
            yield x[lo:lo + step].to(self.device)

    def logits(self, images, batch_size=None) -> torch.Tensor:
        """``exp(logit_scale) * cos(image, class)`` per image and class, ``[B, C]`` fp32 on CPU."""
        with self._evaluating():
            out = [self.trainer.model_inference(x).float().cpu() for x in self._batches(images, batch_size)]
        return torch.cat(out)

    def predict(self, images, batch_size=None) -> torch.Tensor:
        """Class probabilities ``softmax(logits)`` ``[B, C]`` (fp32, CPU; rows sum to 1)."""
        return F.softmax(self.logits(images, batch_size), dim=-1)

    def topk(self, images, k=5, batch_size=None):
        """Per image, the ``k`` most probable ``(classname, probability)`` pairs, best first."""
        probs = self.predict(images, batch_size)
        values, index = probs.topk(min(int(k), probs.shape[1]), dim=-1)
        return [[(self.classnames[i], float(v)) for v, i in zip(vs.tolist(), ix.tolist())]
                for vs, ix in zip(values, index)]

    def text_features(self, normalize=True) -> torch.Tensor:
        """The class text features ``[C, E]`` (fp32, CPU); image-conditioned methods (CoCoOp) raise."""
        self.trainer.set_model_mode("eval")
        with torch.no_grad(), self.trainer.autocast():
            text = self.network.text_features().float().cpu()
        return F.normalize(text, dim=-1) if normalize else text

    def image_features(self, images, normalize=True, batch_size=None) -> torch.Tensor:
        """The (prompted) image features ``[B, E]`` (fp32, CPU)."""
        self.trainer.set_model_mode("eval")
        with torch.no_grad(), self.trainer.autocast():
            out = [self.network.image_features(x).float().cpu() for x in self._batches(images, batch_size)]
        feats = torch.cat(out)
        return F.normalize(feats, dim=-1) if normalize else feats
