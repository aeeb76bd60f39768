"""``dassl.config``: ``get_cfg_default`` = the engine's defaults plus Dassl 0.6.3's keys the engine lacks,
plus :data:`COMPAT_KEYS` (this package's own, default = Dassl's behaviour)."""
from yacs.config import CfgNode as CN

from engine.config import get_cfg_default as _engine_defaults

__all__ = ["get_cfg_default", "clean_cfg"]

# Dassl 0.6.3 keys (dassl/config/defaults.py) absent from the engine: VERSION and the DA/DG/SSL trainer nodes.
_DASSL_ONLY = {
    "VERSION": 1,
    "TRAINER.MCD.N_STEP_F": 4,
    "TRAINER.MME.LMDA": 0.1,
    "TRAINER.CDAC.CLASS_LR_MULTI": 10,
    "TRAINER.CDAC.RAMPUP_COEF": 30,
    "TRAINER.CDAC.RAMPUP_ITRS": 1000,
    "TRAINER.CDAC.TOPK_MATCH": 5,
    "TRAINER.CDAC.P_THRESH": 0.95,
    "TRAINER.CDAC.STRONG_TRANSFORMS": (),
    "TRAINER.SE.EMA_ALPHA": 0.999,
    "TRAINER.SE.CONF_THRE": 0.95,
    "TRAINER.SE.RAMPUP": 300,
    "TRAINER.M3SDA.LMDA": 0.5,
    "TRAINER.M3SDA.N_STEP_F": 4,
    "TRAINER.DAEL.WEIGHT_U": 0.5,
    "TRAINER.DAEL.CONF_THRE": 0.95,
    "TRAINER.DAEL.STRONG_TRANSFORMS": (),
    "TRAINER.CROSSGRAD.EPS_F": 1.0,
    "TRAINER.CROSSGRAD.EPS_D": 1.0,
    "TRAINER.CROSSGRAD.ALPHA_F": 0.5,
    "TRAINER.CROSSGRAD.ALPHA_D": 0.5,
    "TRAINER.DDAIG.G_ARCH": "",
    "TRAINER.DDAIG.LMDA": 0.3,
    "TRAINER.DDAIG.CLAMP": False,
    "TRAINER.DDAIG.CLAMP_MIN": -1.0,
    "TRAINER.DDAIG.CLAMP_MAX": 1.0,
    "TRAINER.DDAIG.WARMUP": 0,
    "TRAINER.DDAIG.ALPHA": 0.5,
    "TRAINER.DAELDG.WEIGHT_U": 0.5,
    "TRAINER.DAELDG.CONF_THRE": 0.95,
    "TRAINER.DAELDG.STRONG_TRANSFORMS": (),
    "TRAINER.DOMAINMIX.TYPE": "crossdomain",
    "TRAINER.DOMAINMIX.ALPHA": 1.0,
    "TRAINER.DOMAINMIX.BETA": 1.0,
    "TRAINER.ENTMIN.LMDA": 0.001,
    "TRAINER.MEANTEACHER.WEIGHT_U": 1.0,
    "TRAINER.MEANTEACHER.EMA_ALPHA": 0.999,
    "TRAINER.MEANTEACHER.RAMPUP": 5,
    "TRAINER.MIXMATCH.WEIGHT_U": 100.0,
    "TRAINER.MIXMATCH.TEMP": 2.0,
    "TRAINER.MIXMATCH.MIXUP_BETA": 0.75,
    "TRAINER.MIXMATCH.RAMPUP": 20000,
    "TRAINER.FIXMATCH.WEIGHT_U": 1.0,
    "TRAINER.FIXMATCH.CONF_THRE": 0.95,
    "TRAINER.FIXMATCH.STRONG_TRANSFORMS": (),
}

#: keys of this package only. ``OPTIM.ADAM_EPS``: the ``eps`` of ``dassl.optim.build_optimizer``'s
#: adam / amsgrad / adamw / radam. Dassl hard-codes torch's 1e-8 (the default here); repositories
#: whose README asks to edit Dassl's optimiser (TCP: ``eps=1e-3`` for fp16 Adam) pass
#: ``OPTIM.ADAM_EPS 1e-3`` instead of editing code.
COMPAT_KEYS = {"OPTIM.ADAM_EPS": 1e-8}


def get_cfg_default():
    """A fresh, mutable config: every engine key (Dassl's values) plus :data:`_DASSL_ONLY` and :data:`COMPAT_KEYS`."""
    cfg = _engine_defaults()
    for full_key, value in {**_DASSL_ONLY, **COMPAT_KEYS}.items():
        node = cfg
        *parents, leaf = full_key.split(".")
        for part in parents:
            if part not in node:
                node[part] = CN()
            node = node[part]
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return cfg


def clean_cfg(cfg, trainer):
    """Dassl's ``clean_cfg``: drop every ``TRAINER`` node except ``NAME`` and ``trainer.upper()``."""
    for key in list(cfg.TRAINER.keys()):
        if key == "NAME" or key == trainer.upper():
            continue
        cfg.TRAINER.pop(key, None)
