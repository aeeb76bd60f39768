"""Per-method protocol settings (the sweep's method table) and the benchmark dataset lists.

Both come from the registries, read without importing torch: the dataset lists from
``datasets/benchmark.py``; the method table as follows.

The method table is derived from the method declarations: every ``trainers/<name>.py`` carries a
literal ``METHOD`` dict (key, trainer, config node and defaults, base-to-novel and cross-dataset
config names, official precision, checkpoint folder, aliases, zero-shot flag, table order), read
without importing torch by ``trainers/config.py`` (loaded here by path). ``METHODS`` maps each
key to a :class:`MethodSpec`; ``METHOD_ORDER`` lists the keys in table order. Environment
variable ``CFG`` overrides the config name of a single run.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: folder of the method modules whose ``METHOD`` declarations form the table
TRAINERS_DIR = os.path.join(REPO_ROOT, "trainers")


def _load_by_path(name: str, path: str):
    """Import the torch-free file ``path`` as a private module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BENCHMARK = _load_by_path("_harness_benchmark_datasets", os.path.join(REPO_ROOT, "datasets", "benchmark.py"))
#: base-to-novel datasets in the papers' table order (config file stems under configs/datasets)
BASE2NEW_DATASETS = tuple(_BENCHMARK.BASE2NEW_DATASETS)
XD_SOURCE = _BENCHMARK.XD_SOURCE
XD_TARGETS = tuple(_BENCHMARK.XD_TARGETS)
DG_TARGETS = tuple(_BENCHMARK.DG_TARGETS)
#: display names used in the tables (papers' column headers)
DATASET_TITLES = dict(_BENCHMARK.DATASET_TITLES)


@dataclass(frozen=True)
class MethodSpec:
    """How one method runs the protocols (built from its ``METHOD`` declaration).

    ``trainer``: ``--trainer`` value and the ``<trainer>`` folder of the output tree.
    ``config_dir``: folder under ``configs/trainers``. ``b2n_cfg``: base-to-novel config,
    ``b2n_cfg_per_dataset`` overrides it per dataset. ``xd_cfg``: cross-dataset / DG training
    config. ``zero_shot``: no training; every job is ``--eval-only`` without a model dir. ``prec``:
    the ``TRAINER.<node>.PREC`` arithmetic the official scripts effectively trained and tested with.
    ``node``: config node; ``checkpoint``: checkpoint folder (None: nothing saved); ``order``:
    table position; ``title``: table row name. Few-shot protocol config: ``fewshot_cfg_per_dataset``,
    else ``fewshot_cfg_per_shots`` (by K), else ``fewshot_cfg``, else the base-to-novel config.
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
    node: str = ""
    checkpoint: str | None = "prompt_learner"
    order: int = 0
    title: str = ""
    fewshot_cfg: str | None = None
    fewshot_cfg_per_shots: dict = field(default_factory=dict)
    fewshot_cfg_per_dataset: dict = field(default_factory=dict)

    def base2new_cfg(self, dataset: str) -> str:
        return self.b2n_cfg_per_dataset.get(dataset, self.b2n_cfg)

    def fewshot_config(self, dataset: str, shots: int) -> str:
        """The few-shot protocol's config for ``dataset`` at ``shots`` per class."""
        return (self.fewshot_cfg_per_dataset.get(dataset) or self.fewshot_cfg_per_shots.get(shots)
                or self.fewshot_cfg or self.base2new_cfg(dataset))


def _declarations_module(directory: str):
    return _load_by_path("_harness_method_declarations", os.path.join(directory, "config.py"))


def _declarations(directory: str = TRAINERS_DIR):
    """The completed ``METHOD`` declarations of ``directory`` (``trainers/config.py`` loaded by path)."""
    return _declarations_module(directory).method_declarations(directory)


def trainer_names(directory: str = TRAINERS_DIR) -> list:
    """Every trainer class name ``train.py --trainer`` accepts (``trainers.config.trainer_names``), torch-free."""
    return _declarations_module(directory).trainer_names(directory)


def load_methods(directory: str = TRAINERS_DIR) -> dict:
    """``{key: MethodSpec}`` in table order, from the declarations of ``directory``."""
    names = [f for f in MethodSpec.__dataclass_fields__]
    return {d["key"]: MethodSpec(**{n: d[n] for n in names}) for d in _declarations(directory)}


METHODS = load_methods()

#: method order used by ``--methods all`` and the tables
METHOD_ORDER = tuple(METHODS)


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
