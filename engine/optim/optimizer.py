"""``build_optimizer(model, optim_cfg, param_groups=None)`` (Dassl ``dassl.optim.build_optimizer``).

``OPTIM.NAME``: sgd (``MOMENTUM`` 0.9, ``WEIGHT_DECAY`` 5e-4, ``SGD_DAMPNING``, ``SGD_NESTEROV``),
adam / amsgrad / adamw / radam (``ADAM_BETA1/2``), rmsprop (``RMSPROP_ALPHA``). ``STAGED_LR``: the
children named in ``NEW_LAYERS`` train at ``LR``, the rest at ``LR * BASE_LR_MULT``.
``model`` may be an ``nn.Module`` or an iterable of parameters (or of param-group dicts).
"""
import torch
import torch.nn as nn

__all__ = ["build_optimizer", "AVAILABLE_OPTIMIZERS"]

AVAILABLE_OPTIMIZERS = ("adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw")


def _staged_groups(model, optim_cfg):
    if not isinstance(model, nn.Module):
        raise ValueError("OPTIM.STAGED_LR needs an nn.Module (not a parameter list) to find NEW_LAYERS")
    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers]
    if not new_layers:
        raise ValueError("OPTIM.STAGED_LR is True but OPTIM.NEW_LAYERS is empty")
    children = dict(model.named_children())
    missing = [n for n in new_layers if n not in children]
    if missing:
        raise ValueError(f"OPTIM.NEW_LAYERS names unknown children {missing}; the model has {sorted(children)}")
    base_params, new_params = [], []
    for name, module in children.items():
        (new_params if name in new_layers else base_params).extend(module.parameters())
    return [
        {"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT},
        {"params": new_params},
    ]


def build_optimizer(model, optim_cfg, param_groups=None):
    """Build the ``torch.optim`` optimizer named by ``optim_cfg.NAME`` over ``model`` (or ``param_groups``)."""
    name = optim_cfg.NAME
    if name not in AVAILABLE_OPTIMIZERS:
        raise ValueError(f"OPTIM.NAME must be one of {', '.join(AVAILABLE_OPTIMIZERS)}; got {name!r}")
    lr = optim_cfg.LR
    wd = optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if param_groups is not None and optim_cfg.STAGED_LR:
        raise ValueError("OPTIM.STAGED_LR cannot be combined with explicit param_groups")
    if param_groups is not None:
        params = param_groups
    elif optim_cfg.STAGED_LR:
        params = _staged_groups(model, optim_cfg)
    elif isinstance(model, nn.Module):
        params = model.parameters()
    else:
        params = model
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=wd,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "amsgrad":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, amsgrad=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, weight_decay=wd, betas=betas)
    return torch.optim.RMSprop(
        params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd, alpha=optim_cfg.RMSPROP_ALPHA
    )
