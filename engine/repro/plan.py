"""Job planning: one :class:`Job` per ``train.py`` run of the base-to-novel, cross-dataset (xd) and
domain-generalisation (dg) protocols, with its output folder, arguments and dependencies.

Output tree (MaPLe layout for base-to-novel, ecosystem-compat.md §3.1; ``xd/`` for xd and dg)::

    <root>/base2new/train_base/<dataset>/shots_<K>/<trainer>/<cfg>/seed<N>   train on base, test base
    <root>/base2new/test_new/<dataset>/shots_<K>/<trainer>/<cfg>/seed<N>     load last epoch, test new
    <root>/xd/train/<source>/<trainer>/<cfg>_<K>shots/seed<N>                train on all source classes
    <root>/xd/test/<target>/<trainer>/<cfg>_<K>shots/seed<N>                 xd and dg targets

Plan order: protocol (base2new, xd, dg) -> method -> seed -> dataset; within a base2new dataset the
train job precedes its test job; the ImageNet xd training job is shared by xd and dg (listed once,
first where it is needed). The base-to-novel/xd ``--load-epoch`` is the training config's
``OPTIM.MAX_EPOCH`` (YAML, overridden by ``OPTIM.MAX_EPOCH`` in the opts; Dassl default 10).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import yaml

from engine.repro.methods import (BASE2NEW_DATASETS, DG_TARGETS, METHOD_ORDER, XD_SOURCE,
                                  XD_TARGETS, MethodSpec, get_method)

PROTOCOLS = ("base2new", "xd", "dg")
KINDS = ("base2new_train", "base2new_test", "xd_train", "xd_test")
DEFAULT_SHOTS = 16
DASSL_DEFAULT_MAX_EPOCH = 10


class PlanError(ValueError):
    """Bad sweep/job input (unknown protocol, odd opts, unreadable config)."""


@dataclass
class Job:
    """One ``train.py`` invocation. ``args`` excludes the interpreter and script path.

    ``log_kind`` is ``train`` (finished = result block after the end signal) or ``eval``.
    ``deps`` are ids of jobs whose result this one needs. ``problem`` is set when the job cannot
    run at all (missing config); it is reported instead of running.
    """

    id: str
    protocol: str
    kind: str
    method: str
    trainer: str
    cfg: str
    dataset: str
    seed: int
    output_dir: str
    args: list
    log_kind: str
    model_dir: str | None = None
    load_epoch: int | None = None
    deps: tuple = ()
    problem: str | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.kind} {self.trainer} {self.cfg} {self.dataset} seed{self.seed}"


def split_opts(opts) -> list:
    """Validate trailing ``KEY VALUE`` opts (even count, keys look like ``A.B``); returns a list."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise PlanError(f"opts must be KEY VALUE pairs, got an odd number ({len(opts)}): {' '.join(opts)}")
    for key in opts[0::2]:
        if "." not in key or key.startswith("-"):
            raise PlanError(f"opts key {key!r} is not a config key like OPTIM.MAX_EPOCH")
    return opts


def opt_value(opts, key: str):
    """Last value given for ``key`` in ``opts`` (yacs merge_from_list: last wins), else None."""
    value = None
    for k, v in zip(opts[0::2], opts[1::2]):
        if k == key:
            value = v
    return value


def _yaml_get(data, dotted: str):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def resolve_max_epoch(cfg_file: str, opts) -> int:
    """``OPTIM.MAX_EPOCH`` of a run: opts override the YAML, which overrides Dassl's default 10."""
    from_opts = opt_value(opts, "OPTIM.MAX_EPOCH")
    if from_opts is not None:
        try:
            return int(from_opts)
        except ValueError:
            raise PlanError(f"OPTIM.MAX_EPOCH in opts must be an integer, got {from_opts!r}") from None
    try:
        with open(cfg_file, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise PlanError(f"cannot read config file {cfg_file}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PlanError(f"config file {cfg_file} is not valid YAML: {str(e).splitlines()[0]}") from None
    value = _yaml_get(data, "OPTIM.MAX_EPOCH")
    if value is None:
        return DASSL_DEFAULT_MAX_EPOCH
    if not isinstance(value, int) or isinstance(value, bool):
        raise PlanError(f"{cfg_file}: OPTIM.MAX_EPOCH must be an integer, got {value!r}")
    return value


def resolve_config_dir(repo_root: str, name: str) -> str:
    """``configs/trainers/<name>`` (exact, else the one folder matching case-insensitively)."""
    base = os.path.join(repo_root, "configs", "trainers")
    exact = os.path.join(base, name)
    if os.path.isdir(exact) or not os.path.isdir(base):
        return exact
    for entry in sorted(os.listdir(base)):
        if entry.lower() == name.lower() and os.path.isdir(os.path.join(base, entry)):
            return os.path.join(base, entry)
    return exact


def shots_of(opts) -> int:
    value = opt_value(opts, "DATASET.NUM_SHOTS")
    if value is None:
        return DEFAULT_SHOTS
    try:
        return int(value)
    except ValueError:
        raise PlanError(f"DATASET.NUM_SHOTS in opts must be an integer, got {value!r}") from None


def _rel(path: str, root: str) -> str:
    """``path`` relative to ``root`` when inside it (keeps logged commands short), else as is."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


@dataclass
class Context:
    """Where things live: ``repo_root`` (working directory of train.py), ``config_root`` (holds
    ``configs/trainers`` and ``configs/datasets``; default ``repo_root``), ``output_root``,
    ``data_root``, user ``opts``, the xd ``source`` and an optional config-name override."""

    repo_root: str
    output_root: str
    data_root: str
    opts: list = field(default_factory=list)
    source: str = XD_SOURCE
    cfg_override: str | None = None
    config_root: str | None = None


def run_dir(ctx: Context, kind: str, spec: MethodSpec, dataset: str, seed: int, cfg: str) -> str:
    """Output folder of one run (layout in the module docstring)."""
    k = shots_of(ctx.opts)
    root = ctx.output_root
    if kind == "base2new_train":
        return os.path.join(root, "base2new", "train_base", dataset, f"shots_{k}", spec.trainer, cfg, f"seed{seed}")
    if kind == "base2new_test":
        return os.path.join(root, "base2new", "test_new", dataset, f"shots_{k}", spec.trainer, cfg, f"seed{seed}")
    if kind == "xd_train":
        return os.path.join(root, "xd", "train", dataset, spec.trainer, f"{cfg}_{k}shots", f"seed{seed}")
    if kind == "xd_test":
        return os.path.join(root, "xd", "test", dataset, spec.trainer, f"{cfg}_{k}shots", f"seed{seed}")
    raise PlanError(f"unknown job kind {kind!r}; expected one of {KINDS}")


def make_job(ctx: Context, method: str, kind: str, dataset: str, seed: int, protocol: str | None = None) -> Job:
    """Build the job for one script call (``scripts/<method>/<kind>.sh DATASET SEED [opts]``).

    For ``xd_train`` the dataset is the source; for ``xd_test`` the model comes from the source's
    xd training folder (``ctx.source``). Zero-shot methods run every kind as ``--eval-only``.
    """
    spec = get_method(method)
    if kind not in KINDS:
        raise PlanError(f"unknown job kind {kind!r}; expected one of {KINDS}")
    opts = split_opts(ctx.opts)
    k = shots_of(opts)
    cfg = ctx.cfg_override or (spec.base2new_cfg(dataset) if kind.startswith("base2new") else spec.xd_cfg)
    croot = ctx.config_root or ctx.repo_root
    cfg_file = os.path.join(resolve_config_dir(croot, spec.config_dir), cfg + ".yaml")
    ds_file = os.path.join(croot, "configs", "datasets", dataset + ".yaml")
    out = run_dir(ctx, kind, spec, dataset, seed, cfg)
    problem = None
    for path, what in ((cfg_file, "method config"), (ds_file, "dataset config")):
        if not os.path.isfile(path):
            problem = problem or f"{what} not found: {path}"
    args = ["--root", ctx.data_root, "--seed", str(seed), "--trainer", spec.trainer,
            "--dataset-config-file", _rel(ds_file, ctx.repo_root),
            "--config-file", _rel(cfg_file, ctx.repo_root), "--output-dir", out]
    model_dir, load_epoch, deps = None, None, ()
    if kind in ("base2new_test", "xd_test") and not spec.zero_shot:
        train_kind = "base2new_train" if kind == "base2new_test" else "xd_train"
        train_ds = dataset if kind == "base2new_test" else ctx.source
        model_dir = run_dir(ctx, train_kind, spec, train_ds, seed, cfg)  # trained with the same cfg
        deps = (job_id(ctx, model_dir),)
        if problem is None:
            try:
                load_epoch = resolve_max_epoch(cfg_file, opts)
            except PlanError as e:
                problem = str(e)
        args += ["--model-dir", model_dir]
        if load_epoch is not None:
            args += ["--load-epoch", str(load_epoch)]
    trains = kind in ("base2new_train", "xd_train") and not spec.zero_shot
    if not trains:
        args.append("--eval-only")
    if kind == "base2new_train":
        args += ["DATASET.NUM_SHOTS", str(k), "DATASET.SUBSAMPLE_CLASSES", "base"]
    elif kind == "base2new_test":
        args += ["DATASET.NUM_SHOTS", str(k), "DATASET.SUBSAMPLE_CLASSES", "new"]
    elif kind == "xd_train":
        args += ["DATASET.NUM_SHOTS", str(k)]
    args += opts  # user opts last: they override the protocol's opts (yacs: last wins)
    if protocol is None:
        protocol = "base2new" if kind.startswith("base2new") else ("dg" if dataset in DG_TARGETS else "xd")
    return Job(id=job_id(ctx, out), protocol=protocol, kind=kind, method=spec.key, trainer=spec.trainer,
               cfg=cfg, dataset=dataset, seed=seed, output_dir=out, args=args,
               log_kind="train" if trains else "eval", model_dir=model_dir, load_epoch=load_epoch,
               deps=deps, problem=problem)


def job_id(ctx: Context, out_dir: str) -> str:
    """Stable id of a job: its output folder relative to the output root, with ``/`` separators."""
    return os.path.relpath(out_dir, ctx.output_root).replace(os.sep, "/")


def expand_protocols(names) -> list:
    out = []
    for name in names:
        chosen = PROTOCOLS if name == "all" else (name,)
        for p in chosen:
            if p not in PROTOCOLS:
                raise PlanError(f"unknown protocol {name!r}; expected base2new, xd, dg or all")
            if p not in out:
                out.append(p)
    return [p for p in PROTOCOLS if p in out]


def build_plan(ctx: Context, protocols, methods, datasets, seeds, dg_targets=None) -> list:
    """All jobs of a sweep, in plan order (module docstring), without duplicates.

    ``datasets``: ``["all"]`` or explicit config stems; they are the base-to-novel datasets and
    the xd targets (minus the source). ``dg_targets`` defaults to the four ImageNet variants.
    """
    protos = expand_protocols(protocols)
    specs = []
    for m in methods:
        chosen = list(METHOD_ORDER) if m == "all" else [get_method(m).key]
        specs.extend(k for k in chosen if k not in specs)
    if not seeds:
        raise PlanError("no seeds given")
    if list(datasets) == ["all"]:
        b2n, xd_targets = list(BASE2NEW_DATASETS), list(XD_TARGETS)
    else:
        b2n = list(dict.fromkeys(datasets))
        xd_targets = [d for d in b2n if d != ctx.source]
    dg = list(dg_targets) if dg_targets else list(DG_TARGETS)
    jobs, seen = [], set()

    def add(job):
        if job.id not in seen:
            seen.add(job.id)
            jobs.append(job)

    for proto in protos:
        for key in specs:
            for seed in seeds:
                if proto == "base2new":
                    for ds in b2n:
                        add(make_job(ctx, key, "base2new_train", ds, seed, "base2new"))
                        add(make_job(ctx, key, "base2new_test", ds, seed, "base2new"))
                else:
                    add(make_job(ctx, key, "xd_train", ctx.source, seed, proto))
                    for ds in (xd_targets if proto == "xd" else dg):
                        add(make_job(ctx, key, "xd_test", ds, seed, proto))
    return jobs


def checkpoint_problem(job: Job) -> str | None:
    """For a test job, a one-line problem when ``model_dir`` holds no ``*/model.pth.tar-<load_epoch>``."""
    if job.model_dir is None or job.load_epoch is None:
        return None
    pattern = os.path.join(glob.escape(job.model_dir), "*", f"model.pth.tar-{job.load_epoch}")
    if glob.glob(pattern):
        return None
    return (f"no checkpoint model.pth.tar-{job.load_epoch} under {job.model_dir}/<model name>/ "
            f"(was it trained with OPTIM.MAX_EPOCH {job.load_epoch}?)")
