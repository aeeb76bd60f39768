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

from repro.foreign_methods import FOREIGN_METHODS

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
    source: str = "native"
    repo: str = ""
    commit: str = ""
    repo_dir: str = ""
    repo_env: str = ""
    config_root: str = "."

    @property
    def foreign(self) -> bool:
        """A method run from its official repository (``repro.foreign_methods``), not ``trainers/``."""
        return self.source != "native"

    @property
    def folder(self) -> str:
        """Output-tree folder and table row key: the trainer name, ``<trainer>@<source>`` for foreign code."""
        return f"{self.trainer}@{self.source}" if self.foreign else self.trainer

    def repo_path(self, environ=None) -> str:
        """The folder holding the foreign repo's ``train.py``: ``$<repo_env>``, else
        ``$HARNESS_DASSL_REPOS/<repo name>/<repo_dir>``; KeyError (one line) when neither is set."""
        environ = os.environ if environ is None else environ
        if environ.get(self.repo_env):
            return os.path.abspath(environ[self.repo_env])
        if environ.get("HARNESS_DASSL_REPOS"):
            root = os.path.join(environ["HARNESS_DASSL_REPOS"], self.repo.split("/")[-1], self.repo_dir)
            return os.path.abspath(root.rstrip(os.sep))
        raise KeyError(f"{self.folder} runs the official code of github.com/{self.repo}: set {self.repo_env} to its "
                       f"checkout{'/' + self.repo_dir if self.repo_dir else ''} or HARNESS_DASSL_REPOS to the folder "
                       "holding the checkouts")

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
    return {d["key"]: MethodSpec(**{n: d[n] for n in names if n in d}) for d in _declarations(directory)}


def load_foreign_methods(order_after: int = 0) -> dict:
    """``{key: MethodSpec}`` of ``repro.foreign_methods`` (official repos run through ``train.py --dassl-repo``)."""
    names = [f for f in MethodSpec.__dataclass_fields__]
    return {d["key"]: MethodSpec(**{n: d[n] for n in names if n in d}, order=order_after + i,
                                 aliases=(f"{d['trainer']}@{d['source']}",))
            for i, d in enumerate(FOREIGN_METHODS, 1)}


METHODS = load_methods()
#: foreign methods (official code), looked up by ``get_method`` like native ones, listed after them
FOREIGN = load_foreign_methods(max((m.order for m in METHODS.values()), default=0))

#: method order used by ``--methods all`` (native methods; foreign ones are named explicitly)
METHOD_ORDER = tuple(METHODS)
#: row order of the tables: native methods, then foreign ones
TABLE_ORDER = METHOD_ORDER + tuple(FOREIGN)


def get_method(name: str) -> MethodSpec:
    """Look a method up by key, trainer name or alias, case-insensitively; one-line error on a miss."""
    low = name.lower()
    for spec in list(METHODS.values()) + list(FOREIGN.values()):
        names = (spec.key, spec.folder) + spec.aliases
        if low in (n.lower() for n in names):
            return spec
    known = ", ".join(s.folder for s in list(METHODS.values()) + list(FOREIGN.values()))
    raise KeyError(f"unknown method {name!r}; expected one of: {known}")


def canonical_trainer(name: str) -> str:
    """Trainer folder name of an output tree -> our trainer name (``COMMA`` -> ``CoMMA``; a foreign method keeps
    its source tag: ``MaPLe@upstream``); unknown names unchanged."""
    try:
        return get_method(name).folder
    except KeyError:
        return name
