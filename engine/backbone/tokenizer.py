"""``tokenize``: CLIP's BPE tokenizer, padded to CLIP's context of 77 tokens."""
import torch

from ._clip import clip


def tokenize(texts, truncate: bool = False) -> torch.Tensor:
    """``clip.tokenize`` returning a ``LongTensor[N, 77]`` (SOS ... EOT, zero padded).

    A text longer than the context raises ValueError naming it (unless ``truncate``).
    """
    if isinstance(texts, str):
        texts = [texts]
    try:
        return clip.tokenize(list(texts), truncate=truncate).long()
    except RuntimeError as err:
        raise ValueError(f"cannot tokenize: {err}") from None


def tokenizer_for(model):
    """The tokenizer of backbone ``model``: its own ``tokenize`` (OpenCLIP backbones) or CLIP's
    :func:`tokenize`. Both return ``LongTensor[N, context_length]`` with EOT = the highest token id."""
    own = getattr(model, "tokenize", None)
    return own if callable(own) else tokenize
