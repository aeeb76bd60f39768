"""Per-method protocol settings (trainer name, configs) and the benchmark dataset lists.

Config names are those of the official scripts (ecosystem-compat.md §3.1-3.3; MaPLe repo
``scripts/independent-vlp`` and ``scripts/vpt`` use ``vit_b16_c2_ep5_batch4_2+2ctx`` and
``vit_b16_c2_ep5_batch4_4`` for base-to-novel AND cross-dataset training, which is what the
published IVLP row was produced with). CoOp trains base-to-novel with ``vit_b16_ctxv1`` (200 epochs) except ImageNet
(``vit_b16_ep50_ctxv1``), as the CoCoOp paper's protocol; CoOp and CoCoOp use their ImageNet config
for the cross-dataset ImageNet training, as CoCoOp's ``xd_train.sh`` does. Environment variable
``CFG`` overrides the config name of a single run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: base-to-novel datasets in the papers' table order (config file stems under configs/datasets)
BASE2NEW_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers",
                     "food101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
XD_SOURCE = "imagenet"
XD_TARGETS = BASE2NEW_DATASETS[1:]
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")

#: display names used in the tables (papers' column headers)
DATASET_TITLES = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "oxford_flowers": "Flowers102", "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DTD", "eurosat": "EuroSAT",
    "ucf101": "UCF101", "imagenetv2": "ImageNetV2", "imagenet_sketch": "ImageNet-Sketch",
    "imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R", "shapes": "Shapes",
}


@dataclass(frozen=True)
class MethodSpec:
    """How one method runs the protocols.

    ``trainer``: ``--trainer`` value and the ``<trainer>`` folder of the output tree.
    ``config_dir``: folder under ``configs/trainers``. ``b2n_cfg``: base-to-novel config,
    ``b2n_cfg_per_dataset`` overrides it per dataset (CoOp ImageNet uses 50 epochs).
    ``xd_cfg``: cross-dataset / DG training config. ``zero_shot``: no training; every job is
    ``--eval-only`` without a model dir. ``prec``: the ``TRAINER.<METHOD>.PREC`` arithmetic the
    official scripts effectively trained and tested with (VPT's official model is cast to fp32).
    """

    key: str
    trainer: str
    config_dir: str
    b2n_cfg: str
    xd_cfg: str
    b2n_cfg_per_dataset: dict = field(default_factory=dict)
    zero_shot: bool = False
    aliases: tuple = ()
    prec: str = "fp16"

    def base2new_cfg(self, dataset: str) -> str:
        return self.b2n_cfg_per_dataset.get(dataset, self.b2n_cfg)


METHODS = {
    "comma": MethodSpec("comma", "CoMMA", "CoMMA", "vit_b16_c2_ep5_batch4_2ctx",
                        "vit_b16_c2_ep5_batch4_2ctx_cross_datasets", aliases=("COMMA",)),
    "maple": MethodSpec("maple", "MaPLe", "MaPLe", "vit_b16_c2_ep5_batch4_2ctx",
                        "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"),
    "coop": MethodSpec("coop", "CoOp", "CoOp", "vit_b16_ctxv1", "vit_b16_ep50_ctxv1",
                       b2n_cfg_per_dataset={"imagenet": "vit_b16_ep50_ctxv1"}),
    "cocoop": MethodSpec("cocoop", "CoCoOp", "CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1",
                         "vit_b16_c4_ep10_batch1_ctxv1"),
    "ivlp": MethodSpec("ivlp", "IVLP", "IVLP", "vit_b16_c2_ep5_batch4_2+2ctx",
                       "vit_b16_c2_ep5_batch4_2+2ctx"),
    "vpt": MethodSpec("vpt", "VPT", "VPT", "vit_b16_c2_ep5_batch4_4", "vit_b16_c2_ep5_batch4_4",
                      prec="fp32"),
    "zsclip": MethodSpec("zsclip", "ZeroshotCLIP", "CoOp", "vit_b16", "vit_b16", zero_shot=True,
                         aliases=("CLIP", "ZeroShotCLIP", "zeroshot")),
}

#: method order used by ``--methods all`` and the tables
METHOD_ORDER = ("zsclip", "coop", "cocoop", "vpt", "ivlp", "maple", "comma")


def get_method(name: str) -> MethodSpec:
    """Look a method up by key, trainer name or alias, case-insensitively; one-line error on a miss."""
    low = name.lower()
    for spec in METHODS.values():
        names = (spec.key, spec.trainer) + spec.aliases
        if low in (n.lower() for n in names):
            return spec
    known = ", ".join(s.trainer for s in METHODS.values())
    raise KeyError(f"unknown method {name!r}; expected one of: {known}")


def canonical_trainer(name: str) -> str:
    """Trainer folder name of an output tree -> our trainer name (``COMMA`` -> ``CoMMA``); unknown names unchanged."""
    try:
        return get_method(name).trainer
    except KeyError:
        return name
