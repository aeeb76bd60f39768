"""``dassl.utils`` checkpoint helpers over the engine's safe loader.

``load_checkpoint(fpath)`` reads our weights-only checkpoints and the official repos' Dassl-pickled
ones (``engine.legacy_checkpoint``: no class of the file is ever executed); it returns the dict their
``load_model`` expects (``state_dict``, ``epoch``, ...). Dassl's ``torch.load`` of arbitrary pickles
is not reproduced.
"""
import os
import warnings
from collections import OrderedDict

from engine.legacy_checkpoint import load_official_or_native

__all__ = ["load_checkpoint", "load_pretrained_weights", "count_num_param"]


def load_checkpoint(fpath):
    """The checkpoint at ``fpath`` as a dict (``state_dict``, ``epoch``, ``optimizer``, ``scheduler``,
    ``val_result``)."""
    if fpath is None:
        raise ValueError("File path is None")
    if not os.path.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    return load_official_or_native(fpath)


def load_pretrained_weights(model, weight_path):
    """Dassl's rule: copy the tensors of ``weight_path`` whose name and size match ``model``; report the rest."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint
    model_dict = model.state_dict()
    new_state_dict = OrderedDict()
    matched_layers, discarded_layers = [], []
    for k, v in state_dict.items():
        if k.startswith("module."):
            k = k[7:]
        if k in model_dict and model_dict[k].size() == v.size():
            new_state_dict[k] = v
            matched_layers.append(k)
        else:
            discarded_layers.append(k)
    model_dict.update(new_state_dict)
    model.load_state_dict(model_dict)
    if not matched_layers:
        warnings.warn(f"Cannot load {weight_path} (check the key names manually)")
    else:
        print(f"Successfully loaded pretrained weights from {weight_path}")
        if discarded_layers:
            print(f"Layers discarded due to unmatched keys or size: {discarded_layers}")


def count_num_param(model=None, params=None):
    """Number of elements of ``model``'s parameters (or of ``params``)."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        return sum(p.numel() for p in params)
    raise ValueError("model and params must provide at least one.")
