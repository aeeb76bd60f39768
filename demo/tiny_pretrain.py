"""Contrastive pretraining of a tiny OpenAI-architecture CLIP on drawn Shapes images (the offline demo backbone).

The model is the unmodified ``clip.model.CLIP`` (``Recipe.architecture()``: a ViT of the ViT-Tiny
family), initialised by CLIP's own code under a forked RNG seeded with ``Recipe.seed``, trained with
the symmetric InfoNCE loss of CLIP,

    L = (CE(s * I T^T, y) + CE(s * T I^T, y)) / 2,   s = exp(logit_scale) <= 100 (learned),

on images of every Shapes class drawn by ``demo.shapes_draw`` (fresh random draws, never the
Shapes dataset's own images), each paired at every step with a caption drawn from several phrasings
of its shape, colour, size and position ("a photo of a large red star.", "a blue circle in the top
left.", ...), tokenized by CLIP's tokenizer.

Images: a pool of drawn silhouettes (shape, size, position, rotation) is kept as soft masks ``m``
(the exact 224 px foreground mask resized bicubically to ``R``, as the harness's test transform
resizes images); at every step each silhouette is coloured afresh, ``x = bg + (fg - bg) * m``, which
equals resizing the drawing in those colours (resizing is linear), then normalised with CLIP's
mean/std. Colour is what makes a small ViT slow to learn shapes (it must learn that any foreground
/background pair means the same silhouette), so two measured aids are part of the recipe:

* colour curriculum: over the first ``colour_curriculum`` steps the colours move linearly from a
  black/white pair of random polarity to the Shapes dataset's colour distribution (random RGB pairs
  at least 160 apart), which is used alone afterwards;
* the patch embedding (``visual.conv1``) starts as the whitened principal components of image
  patches (``pca_init``), the rest as CLIP initialises it.

Everything is seeded (pool, captions, batches, initialisation): the same recipe on the same machine
and thread count gives the same weights. ``ensure_pretrained`` trains once and caches the state dict
(plain tensors, ``torch.load(weights_only=True)``) at a content-addressed path
``<dir>/tiny-clip-shapes-<digest>.pt`` (digest of the recipe), written atomically, with a JSON
sidecar holding the recipe and the final metrics. Load it with ``MODEL.BACKBONE.PATH <file>`` and
``INPUT.SIZE (R, R)``.
"""
import dataclasses
import datetime
import hashlib
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F

from engine.utils.io import atomic_torch_save, atomic_write_json
from engine.utils.logger import get_logger

from engine.backbone._clip import CLIP
from engine.backbone.tokenizer import tokenize
from engine.backbone.weights import clip_cache_dir

#: bump when the training code changes what a recipe produces (part of the cache digest)
CODE_VERSION = 2
FILE_PREFIX = "tiny-clip-shapes-"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DRAW_SIZE = 224  # the Shapes dataset's image size; pool images are drawn at it, then resized

#: named colours for captions (the nearest one names a drawn RGB colour)
COLOURS = {
    "red": (220, 30, 30), "green": (40, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 40),
    "orange": (245, 140, 20), "purple": (130, 40, 170), "pink": (245, 140, 190), "brown": (130, 80, 30),
    "black": (20, 20, 20), "white": (240, 240, 240), "gray": (128, 128, 128), "cyan": (40, 200, 210),
}
#: shape-only phrasings (one of them is drawn with probability ``Recipe.shape_only``)
SHAPE_PHRASINGS = ("a photo of a {shape}.", "a {shape}.", "a drawing of a {shape}.", "a picture of a {shape}.")
#: phrasings with attributes (the rest of the time)
PHRASINGS = (
    "a photo of a {shape}.",
    "a {colour} {shape}.",
    "a photo of a {size} {shape}.",
    "a {size} {colour} {shape}.",
    "a {colour} {shape} on a {bg} background.",
    "a {shape} in the {position}.",
    "a drawing of a {size} {colour} {shape} in the {position}.",
    "there is a {colour} {shape} at the {position} of the picture.",
    "a photo of a {colour} {shape}.",
    "the {shape} is {size} and {colour}.",
    "a {shape}.",
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that determines the pretrained weights (hashed into the cache file name)."""

    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 64
    vision_layers: int = 4
    text_width: int = 64
    text_layers: int = 4
    embed_dim: int = 64
    classes: tuple = ("circle", "square", "triangle", "star", "hexagon",
                      "pentagon", "heart", "cross", "diamond", "crescent")
    pool_size: int = 16000
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    shape_only: float = 0.5
    colour_curriculum: int = 1500
    pca_init: bool = True
    seed: int = 1

    def architecture(self) -> dict:
        """``clip.model.CLIP`` keyword arguments (heads = width // 64, as ``build_model`` infers)."""
        return dict(embed_dim=self.embed_dim, image_resolution=self.image_size,
                    vision_layers=self.vision_layers, vision_width=self.vision_width,
                    vision_patch_size=self.patch_size, context_length=77, vocab_size=49408,
                    transformer_width=self.text_width, transformer_heads=max(self.text_width // 64, 1),
                    transformer_layers=self.text_layers)

    def digest(self) -> str:
        """12 hex digits of SHA-256 over the recipe and ``CODE_VERSION``."""
        blob = json.dumps({"code_version": CODE_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_cache_dir() -> str:
    """Where pretrained tiny CLIPs are cached: the CLIP cache (``$CLIP_CACHE_DIR`` or ``~/.cache/clip``)."""
    return clip_cache_dir()


def weights_path(recipe: Recipe, cache_dir: str = None) -> str:
    """Content-addressed file of ``recipe``: ``<cache_dir>/tiny-clip-shapes-<digest>.pt``."""
    return os.path.join(cache_dir or default_cache_dir(), f"{FILE_PREFIX}{recipe.digest()}.pt")


# ---------------------------------------------------------------------------------- captions
def colour_name(rgb) -> str:
    """Nearest named colour (Euclidean RGB) of ``rgb``."""
    return min(COLOURS, key=lambda name: math.dist(COLOURS[name], rgb))


def size_word(radius: float) -> str:
    """``small`` / ``medium`` / ``large`` for a radius fraction in the drawing's range [0.16, 0.36]."""
    return "small" if radius < 0.23 else "medium" if radius < 0.29 else "large"


def position_words(x: float, y: float) -> str:
    """``top left`` ... ``bottom right``, ``left``, ``top``, ``center`` from centre fractions."""
    row = "top" if y < 0.42 else "bottom" if y > 0.58 else ""
    col = "left" if x < 0.42 else "right" if x > 0.58 else ""
    return " ".join(w for w in (row, col) if w) or "center"


def caption(attrs, rng: random.Random, shape_only: float = 0.0) -> str:
    """One caption of ``attrs`` (``ShapeAttributes``) in a phrasing chosen by ``rng``: a shape-only
    one with probability ``shape_only``, else one naming colour, size or position too."""
    if rng.random() < shape_only:
        return rng.choice(SHAPE_PHRASINGS).format(shape=attrs.shape)
    words = dict(shape=attrs.shape, colour=colour_name(attrs.foreground), bg=colour_name(attrs.background),
                 size=size_word(attrs.radius), position=position_words(attrs.x, attrs.y))
    return rng.choice(PHRASINGS).format(**words)


# ---------------------------------------------------------------------------------- images
def normalise(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` RGB in [0, 1] -> normalised with CLIP's mean/std (the harness's ``normalize``)."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def to_tensor(images, size: int) -> torch.Tensor:
    """PIL images -> ``[N, 3, size, size]`` resized (bicubic) and normalised with CLIP's mean/std,
    as the harness's test transform (``Resize`` + ``CenterCrop`` + ``Normalize``) does for squares."""
    from PIL import Image

    arrays = [torch.frombuffer(bytearray(im.resize((size, size), Image.BICUBIC).tobytes()), dtype=torch.uint8)
              for im in images]
    x = torch.stack(arrays).view(len(images), size, size, 3).permute(0, 3, 1, 2).float().div_(255)
    return normalise(x)


def draw_pool(recipe: Recipe, n: int, stream: int):
    """``(images [n,3,R,R], labels [n], attributes)``: ``n`` fresh drawings, classes in turn.

    ``stream`` separates independent pools of one seed (0 = training pool, 1 = held-out check).
    """
    from demo.shapes_draw import draw_shape_with_attributes

    rng = random.Random(f"tiny-clip-pool/{recipe.seed}/{stream}")
    images, labels, attrs = [], [], []
    for i in range(n):
        label = i % len(recipe.classes)
        img, a = draw_shape_with_attributes(recipe.classes[label], rng, DRAW_SIZE)
        images.append(img)
        labels.append(label)
        attrs.append(a)
    return to_tensor(images, recipe.image_size), torch.tensor(labels), attrs


def draw_silhouettes(recipe: Recipe, n: int, stream: int):
    """``(masks [n,1,R,R] in [0, 1], labels [n], attributes)``: ``n`` fresh drawings (classes in turn)
    kept as soft foreground masks: the exact 224 px mask (pixels that differ from the background
    colour; the drawing is not anti-aliased) resized bicubically to ``R``."""
    from PIL import Image, ImageChops

    from demo.shapes_draw import draw_shape_with_attributes

    rng = random.Random(f"tiny-clip-pool/{recipe.seed}/{stream}")
    masks, labels, attrs = bytearray(), [], []
    size = recipe.image_size
    for i in range(n):
        label = i % len(recipe.classes)
        img, a = draw_shape_with_attributes(recipe.classes[label], rng, DRAW_SIZE)
        # fg and bg differ by >= 160 (Euclidean), so some channel by >= 92 and the luma of |img - bg| by >= 10
        diff = ImageChops.difference(img, Image.new("RGB", img.size, a.background)).convert("L")
        mask = diff.point(lambda v: 255 if v else 0)
        masks += mask.resize((size, size), Image.BICUBIC).tobytes()
        labels.append(label)
        attrs.append(a)
    masks = torch.frombuffer(masks, dtype=torch.uint8).view(n, 1, size, size) if n else torch.zeros(0, 1, size, size)
    return masks.float().div_(255), torch.tensor(labels), attrs


def sample_colours(rng: random.Random, n: int, mix: float = 1.0):
    """``(background, foreground)`` as ``[n, 3]`` RGB float tensors: the Shapes dataset's distribution
    (random pairs at least 160 apart) blended with weight ``1 - mix`` towards a black/white pair of
    random polarity (``mix = 1``: the dataset's colours; ``mix = 0``: black and white)."""
    from demo.shapes_draw import _distinct_colours

    pairs = [_distinct_colours(rng) for _ in range(n)]
    polarity = [rng.random() < 0.5 for _ in range(n)]
    bg = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
    fg = torch.tensor([p[1] for p in pairs], dtype=torch.float32)
    if mix < 1.0:
        white = torch.tensor(polarity, dtype=torch.float32)[:, None].expand(n, 3) * 255
        bg = mix * bg + (1 - mix) * white
        fg = mix * fg + (1 - mix) * (255 - white)
    return bg, fg


def render(masks: torch.Tensor, bg: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """Normalised images ``[n,3,R,R]`` of soft ``masks`` coloured ``bg + (fg - bg) * m`` (RGB 0-255)."""
    x = (bg[:, :, None, None] + (fg - bg)[:, :, None, None] * masks) / 255
    return normalise(x)


@torch.no_grad()
def pca_patch_init(model: CLIP, images: torch.Tensor) -> None:
    """Set ``visual.conv1`` (patch embedding, ``[W, 3, p, p]``) to the top-``W`` principal components
    of the ``p x p`` patches of ``images``, each scaled by ``1 / sqrt(eigenvalue + 1e-4)`` (whitened);
    rows beyond the patch dimension keep CLIP's initialisation."""
    weight = model.visual.conv1.weight
    width, _, p, _ = weight.shape
    patches = images.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * p * p)
    patches = patches - patches.mean(dim=0)
    evals, evecs = torch.linalg.eigh(patches.t() @ patches / len(patches))
    k = min(width, evecs.shape[1])
    top = evecs.flip(1)[:, :k].t() / (evals.flip(0)[:k].clamp_min(0) + 1e-4).sqrt()[:, None]
    flat = weight.view(width, -1)
    flat[:k] = top


# ---------------------------------------------------------------------------------- model
def encode_text(model: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on the first ``max EOT index + 1`` positions only.

    Exact: CLIP's text attention is causal, so positions after the last EOT never affect it.
    """
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    x = model.token_embedding(tokens) + model.positional_embedding[:length]
    x = x.permute(1, 0, 2)
    mask = torch.full((length, length), float("-inf"), device=x.device).triu_(1)
    for block in model.transformer.resblocks:
        h = block.ln_1(x)
        x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        x = x + block.mlp(block.ln_2(x))
    x = model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection


def build_initial_model(recipe: Recipe) -> CLIP:
    """CLIP's own initialisation of ``recipe.architecture()``, seeded, global RNGs untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = CLIP(**recipe.architecture())
    return model.float()


@torch.no_grad()
def zero_shot_accuracy(model: CLIP, images, labels, classnames, template="a photo of a {}.") -> float:
    """Top-1 accuracy (%) of zero-shot classification with one template, as ``ZeroshotCLIP`` does."""
    model.eval()
    text = F.normalize(encode_text(model, tokenize([template.format(c) for c in classnames])), dim=-1)
    feats = torch.cat([model.encode_image(chunk) for chunk in images.split(256)])
    pred = (F.normalize(feats, dim=-1) @ text.t()).argmax(dim=-1)
    return 100.0 * (pred == labels).float().mean().item()


def contrastive_loss(logits, texts) -> torch.Tensor:
    """Symmetric InfoNCE over ``logits [N, N]`` (image i vs caption j); captions with identical text
    are all positives of each other (soft targets spread evenly over them), so a batch repeating
    "a photo of a star." does not push stars apart. Equals CLIP's loss when all texts differ."""
    ids = {t: k for k, t in enumerate(dict.fromkeys(texts))}
    key = torch.tensor([ids[t] for t in texts])
    same = (key[:, None] == key[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def _lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``steps``."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(recipe.steps - recipe.warmup_steps, 1)
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * progress))


def _as_tuple(value):
    """``random.Random.setstate`` wants tuples; a saved state may come back with lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def checkpoint_path(recipe: Recipe, cache_dir: str = None) -> str:
    """Where an unfinished pretraining of ``recipe`` keeps its state: ``<weights path>.partial``."""
    return weights_path(recipe, cache_dir) + ".partial"


def _format_s(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def pretrain(recipe: Recipe, log_every: int = 100, check_every: int = 0, checkpoint: str = None,
             checkpoint_every: int = 0, stop_after: int = None):
    """Train a tiny CLIP by ``recipe``; returns ``(model in eval mode, metrics dict)``, or ``(None,
    None)`` when ``stop_after`` steps of this session are done first (state saved in ``checkpoint``).

    ``checkpoint`` (a file): resumed from when it holds a state of this recipe (same digest), and
    written atomically every ``checkpoint_every`` steps and at a ``stop_after`` stop; a resumed run
    gives the weights of an uninterrupted one (model, optimiser, batch order, pool position, every
    RNG and the loss history are restored). Progress lines (every ``log_every`` steps, and at step 10)
    give the elapsed time and the ETA of this session's pace.

    Metrics: ``loss_first`` / ``loss_last`` (mean over the first / last 10% of steps),
    ``zero_shot_heldout`` (accuracy % on 50 fresh drawings per class in the Shapes dataset's colours,
    template "a photo of a {}."), ``seconds``. ``check_every > 0`` also logs that accuracy every so many
    steps (training is unchanged by it: the check draws from its own stream and leaves the RNGs alone).
    """
    log = get_logger()
    start = time.time()
    masks, _, attrs = draw_silhouettes(recipe, recipe.pool_size, stream=0)
    log.info(f"Tiny CLIP pretraining: drew {len(attrs)} silhouettes of {len(recipe.classes)} classes "
             f"({time.time() - start:.1f} s); {recipe.steps} steps of batch {recipe.batch_size}")
    colour_rng = random.Random(f"tiny-clip-colours/{recipe.seed}")
    check, check_labels, _ = draw_pool(recipe, 50 * len(recipe.classes), stream=1)
    model = build_initial_model(recipe).train()
    if recipe.pca_init:
        sample = masks[:2000]
        pca_patch_init(model, render(sample, *sample_colours(colour_rng, len(sample))))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.98),
                            eps=1e-6, foreach=False)
    gen = torch.Generator().manual_seed(recipe.seed)
    cap_rng = random.Random(f"tiny-clip-captions/{recipe.seed}")
    token_cache = {}
    order, pos, losses = torch.randperm(len(attrs), generator=gen), 0, []
    first = 0
    if checkpoint and os.path.isfile(checkpoint):
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("digest") == recipe.digest():
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            colour_rng.setstate(_as_tuple(state["colour_rng"]))
            cap_rng.setstate(_as_tuple(state["caption_rng"]))
            order, pos, losses, first = state["order"], int(state["pos"]), list(state["losses"]), int(state["step"])
            log.info(f"Tiny CLIP pretraining: resumed at step {first}/{recipe.steps} from {checkpoint}")
        else:
            log.warning(f"{checkpoint} holds another recipe's state ({state.get('digest')}); starting over")

    def save(step_done):
        atomic_torch_save({"digest": recipe.digest(), "step": step_done, "model": model.state_dict(),
                           "optimizer": opt.state_dict(), "generator": gen.get_state(),
                           "colour_rng": colour_rng.getstate(), "caption_rng": cap_rng.getstate(),
                           "order": order, "pos": pos, "losses": list(losses)}, checkpoint)

    session_start = time.time()
    for step in range(first, recipe.steps):
        if pos + recipe.batch_size > len(order):
            order, pos = torch.randperm(len(attrs), generator=gen), 0
        idx = order[pos:pos + recipe.batch_size]
        pos += recipe.batch_size
        mix = min(1.0, step / recipe.colour_curriculum) if recipe.colour_curriculum > 0 else 1.0
        bg, fg = sample_colours(colour_rng, len(idx), mix)
        images = render(masks[idx], bg, fg)
        texts = [caption(attrs[i]._replace(foreground=tuple(fg[k].tolist()), background=tuple(bg[k].tolist())),
                         cap_rng, recipe.shape_only) for k, i in enumerate(idx.tolist())]
        missing = [t for t in dict.fromkeys(texts) if t not in token_cache]
        if missing:
            token_cache.update(zip(missing, tokenize(missing)))
        tokens = torch.stack([token_cache[t] for t in texts])
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, recipe)
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(encode_text(model, tokens), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        loss = contrastive_loss(logits, texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        done = step + 1
        if log_every and (done % log_every == 0 or done == recipe.steps or done - first == 10):
            elapsed = time.time() - session_start
            eta = elapsed / (done - first) * (recipe.steps - done)
            log.info(f"  step {done}/{recipe.steps}  loss {loss.item():.4f}  "
                     f"logit scale {model.logit_scale.exp().item():.1f}  ({time.time() - start:.0f} s, "
                     f"ETA {_format_s(eta)})")
        if checkpoint and checkpoint_every and done % checkpoint_every == 0 and done < recipe.steps:
            save(done)
        if checkpoint and stop_after and done - first >= stop_after and done < recipe.steps:
            save(done)
            log.info(f"Tiny CLIP pretraining: stopped after step {done}/{recipe.steps}; state in {checkpoint} "
                     "(run again to continue)")
            return None, None
        if check_every and (step + 1) % check_every == 0:
            accuracy = zero_shot_accuracy(model, check, check_labels, recipe.classes)
            model.train()
            log.info(f"  step {step + 1}: held-out zero-shot accuracy {accuracy:.1f}%")
    model.eval()
    tenth = max(len(losses) // 10, 1)
    metrics = dict(loss_first=sum(losses[:tenth]) / tenth, loss_last=sum(losses[-tenth:]) / tenth,
                   zero_shot_heldout=zero_shot_accuracy(model, check, check_labels, recipe.classes),
                   seconds=round(time.time() - start, 1))
    return model, metrics


CHECKPOINT_EVERY = 200  # steps between the resumable states of ensure_pretrained


def ensure_pretrained(recipe: Recipe = Recipe(), cache_dir: str = None, log_every: int = 100,
                      checkpoint_every: int = CHECKPOINT_EVERY, stop_after: int = None):
    """Path of the cached weights of ``recipe``; trains and saves them (atomically) when absent,
    resuming from ``<weights path>.partial`` (written every ``checkpoint_every`` steps, removed at the
    end). With ``stop_after``, returns None after that many steps of this session (state saved)."""
    path = weights_path(recipe, cache_dir)
    log = get_logger()
    if os.path.isfile(path):
        log.info(f"Tiny CLIP: using the cached pretrained weights {path}")
        return path
    log.info(f"Tiny CLIP: no cached weights at {path}; pretraining (recipe {recipe.digest()})")
    partial = checkpoint_path(recipe, cache_dir)
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    model, metrics = pretrain(recipe, log_every=log_every, checkpoint=partial, checkpoint_every=checkpoint_every,
                              stop_after=stop_after)
    if model is None:
        return None
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    atomic_write_json(path[:-3] + ".json", {"recipe": dataclasses.asdict(recipe), "code_version": CODE_VERSION,
                                           "metrics": metrics, "weights": os.path.basename(path)})
    atomic_torch_save(state, path)
    if os.path.isfile(partial):
        os.remove(partial)
    log.info(f"Tiny CLIP: saved {path} (held-out zero-shot accuracy {metrics['zero_shot_heldout']:.1f}%, "
             f"{metrics['seconds']:.0f} s)")
    return path
