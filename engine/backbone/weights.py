"""Where CLIP weights come from, and reading them into a plain state dict.

Resolution order used by ``load_clip`` (``MODEL.BACKBONE.PATH`` is handled by the caller):
the standard CLIP cache ``$CLIP_CACHE_DIR`` (default ``~/.cache/clip``, the folder ``clip.load``
uses) holding ``<basename of clip._MODELS[name]>``, verified by its SHA256; else ``clip``'s own
download into that folder. When neither works, ``BackboneWeightsNotFound`` names the expected
file, the URL and the alternatives.
"""
import contextlib
import os
import socket
import warnings
import zipfile

import torch

from ._clip import clip_api

# Entries that OpenAI's TorchScript archives carry besides the weights (``build_model`` drops them too).
_ARCHIVE_EXTRAS = ("input_resolution", "context_length", "vocab_size")
_DOWNLOAD_TIMEOUT_S = 60


class BackboneWeightsNotFound(FileNotFoundError):
    """No CLIP weights in ``MODEL.BACKBONE.PATH``, the cache, or by download."""


def clip_cache_dir() -> str:
    """The CLIP weight cache: ``$CLIP_CACHE_DIR`` if set, else ``~/.cache/clip`` (as ``clip.load``)."""
    return os.path.expanduser(os.environ.get("CLIP_CACHE_DIR") or "~/.cache/clip")


def weights_url(name: str) -> str:
    """The official download URL of CLIP model ``name`` (``clip._MODELS``); KeyError if none."""
    return clip_api._MODELS[name]


def expected_weights_file(name: str) -> str:
    """The cache path where ``clip`` keeps (and we look for) the weights of ``name``."""
    return os.path.join(clip_cache_dir(), os.path.basename(weights_url(name)))


@contextlib.contextmanager
def _socket_timeout(seconds):
    """Give ``urllib`` a finite timeout (clip passes none) so an offline machine fails fast."""
    old = socket.getdefaulttimeout()
    if old is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def locate_weights(name: str) -> str:
    """Return a verified local file with the official weights of ``name`` (cache hit or download).

    Delegates to ``clip.clip._download`` (checks the SHA256 in the URL; downloads when the file
    is missing or corrupt). Any failure becomes one ``BackboneWeightsNotFound`` line.
    """
    url = weights_url(name)
    root = clip_cache_dir()
    target = os.path.join(root, os.path.basename(url))
    try:
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
            return clip_api._download(url, root)
    except Exception as err:  # network, permissions, checksum: all mean "no usable weights"
        state = ("it exists but its SHA256 does not match " if os.path.isfile(target)
                 else "it is missing ")
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise BackboneWeightsNotFound(
            f"No weights for CLIP backbone {name!r}: expected the file {target} ({state}and the "
            f"download failed: {reason}). Download {url} and place it there (or set $CLIP_CACHE_DIR "
            f"to its folder), or set MODEL.BACKBONE.PATH to a CLIP checkpoint file, or set "
            f"MODEL.BACKBONE.RANDOM_INIT True for random weights (results meaningless)") from None


def is_torchscript_archive(path: str) -> bool:
    """TorchScript archives (OpenAI's CLIP releases) are zip files with a ``code/`` folder; ``torch.save``
    files have none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n or n.endswith("/constants.pkl") for n in zf.namelist())


def read_state_dict(path: str) -> dict:
    """Read CLIP weights from ``path`` into ``{name: tensor}`` (CPU, dtype as stored).

    Accepts an OpenAI TorchScript archive (``torch.jit.load``), a plain state-dict file or a
    dict with a ``state_dict`` entry (``torch.load(weights_only=True)``). Drops the archive's
    non-weight entries. Raises ValueError (one line, naming the file) for anything else.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.BACKBONE.PATH {path!r} is not a file")
    if path.endswith(".safetensors"):
        raise ValueError(f"MODEL.BACKBONE.PATH {path!r} is a safetensors file (OpenCLIP / Hugging Face weights; "
                         f"OpenAI's CLIP weights are TorchScript archives); set MODEL.BACKBONE.NAME "
                         f"open_clip:<architecture> (e.g. open_clip:ViT-B-16)")
    try:
        if is_torchscript_archive(path):
            with warnings.catch_warnings():  # torch marks TorchScript deprecated; OpenAI ships it
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated.*", category=FutureWarning)
                obj = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise unreadable_weights(err, path, "CLIP", "an OpenAI CLIP TorchScript archive or a state-dict file") from None
    obj = as_state_dict(obj, path, "CLIP")
    return {k: v for k, v in obj.items() if k not in _ARCHIVE_EXTRAS}


def unreadable_weights(err: Exception, path: str, what: str, expected: str) -> ValueError:
    """The one-line error for a weights file that could not be read: names the file, ``what`` it
    should hold, ``expected`` formats, and the loader's reason (whitespace collapsed, at most 300 chars)."""
    reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
    return ValueError(f"cannot read {what} weights from {path!r}: expected {expected} ({reason})")


def as_state_dict(obj, path: str, what: str) -> dict:
    """What a weights file held as ``{name: tensor}``: a ``{"state_dict": ...}`` wrapper unwrapped;
    a one-line ValueError naming ``path`` unless it is a non-empty mapping of names to tensors."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise ValueError(f"{what} weights file {path!r} does not hold a state dict "
                         f"(a mapping of parameter names to tensors)")
    return obj
