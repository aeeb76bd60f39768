"""Dassl-compatible entry point: ``python train.py --root DATA --trainer COMMA --config-file ... [KEY VALUE ...]``.

Flags as in CoOp/MaPLe/COMMA ``train.py``. Flow: config (defaults -> ``trainers.config.extend_cfg`` ->
dataset YAML -> method YAML -> flags -> opts) -> logger (``OUTPUT_DIR/log.txt``, appended) -> seed
(``SEED >= 0``, 0 included) -> banner -> trainer -> ``--eval-only`` test or training.
A bad config, an unknown trainer/dataset name, a missing file, a damaged checkpoint, a full disk or
a non-finite loss prints one ``error: ...`` line to stderr (and to ``log.txt`` once it exists) and
exits with status 2. SIGINT/SIGTERM stop training at the end of the current batch with its state
saved (``engine.utils.signals``), print one line saying how to resume and exit with 130/143.
``HARNESS_TRACEBACK=1`` shows the traceback instead.

``python train.py --dassl-repo PATH [--clip-weights FILE] -- <args>`` runs a Dassl-based research repo's
own, unmodified ``train.py`` on the engine instead (``compat.dassl_runner``, docs/DASSL_REPOS.md).
"""
import argparse
import importlib
import os
import sys

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from repro.methods import trainer_names  # noqa: E402  (torch-free: the METHOD declarations, read with ast)

EXIT_USAGE = 2


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train or evaluate a prompt-learning method on CLIP (--trainer lists them). Flags and "
                    "config keys are those of the CoOp/MaPLe/COMMA train.py; trailing KEY VALUE pairs override "
                    "the config (docs/CONFIG.md).",
        epilog="example: python train.py --root data --trainer CoMMA "
               "--config-file configs/trainers/CoMMA/vit_b16_c2_ep5_batch4_2ctx.yaml "
               "--dataset-config-file configs/datasets/shapes.yaml --seed 1 --output-dir output/run1 "
               "DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base")
    parser.add_argument("--root", type=str, default="",
                        help="folder holding the dataset folders (DATASET.ROOT), e.g. data")
    parser.add_argument("--output-dir", type=str, default="",
                        help="run folder for log.txt, checkpoints and run_record.json (OUTPUT_DIR)")
    parser.add_argument("--resume", type=str, default="",
                        help="folder to resume training from (RESUME); default: --output-dir when it holds checkpoints")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (SEED); any value >= 0 fixes it, 0 included; negative: not seeded")
    parser.add_argument("--source-domains", type=str, nargs="+",
                        help="source domains (DATASET.SOURCE_DOMAINS), for multi-domain datasets only")
    parser.add_argument("--target-domains", type=str, nargs="+",
                        help="target domains (DATASET.TARGET_DOMAINS), for multi-domain datasets only")
    parser.add_argument("--transforms", type=str, nargs="+",
                        help="training augmentations (INPUT.TRANSFORMS), "
                             "e.g. random_resized_crop random_flip normalize")
    parser.add_argument("--config-file", type=str, default="",
                        help="method config YAML, e.g. configs/trainers/CoMMA/vit_b16_c2_ep5_batch4_2ctx.yaml")
    parser.add_argument("--dataset-config-file", type=str, default="",
                        help="dataset config YAML, e.g. configs/datasets/caltech101.yaml")
    parser.add_argument("--trainer", type=str, default="",
                        help="method (TRAINER.NAME): " + ", ".join(trainer_names()))
    parser.add_argument("--backbone", type=str, default="",
                        help="CLIP model (MODEL.BACKBONE.NAME), e.g. ViT-B/16 or RN50; ViT-Tiny/16 for tests")
    parser.add_argument("--head", type=str, default="",
                        help="MODEL.HEAD.NAME, kept for Dassl compatibility (the methods here have no head)")
    parser.add_argument("--eval-only", action="store_true",
                        help="only test: the checkpoint from --model-dir, or the method as built (zero-shot CLIP)")
    parser.add_argument("--model-dir", type=str, default="",
                        help="training run folder whose checkpoint --eval-only loads (ours or the official code's)")
    parser.add_argument("--load-epoch", type=int,
                        help="with --model-dir: load model.pth.tar-N (default: model-best.pth.tar, else the latest)")
    parser.add_argument("--no-train", action="store_true",
                        help="build the config, data and model, then stop before training")
    parser.add_argument("--wandb", type=str, default="", metavar="PROJECT",
                        help="also log to Weights & Biases, project PROJECT (TRAIN.WANDB_PROJECT); offline "
                             "unless WANDB_MODE is set. TensorBoard events go to OUTPUT_DIR/tensorboard")
    parser.add_argument(
        "opts", default=None, nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. OPTIM.MAX_EPOCH 2 DATASET.NUM_SHOTS 4"
    )
    return parser


def import_registrations():
    """Import the repo's ``datasets``, ``demo`` and ``trainers`` packages so that they register their classes."""
    for package in ("datasets", "demo", "trainers"):
        module = importlib.import_module(package)
        location = os.path.dirname(os.path.abspath(getattr(module, "__file__", None) or list(module.__path__)[0]))
        if os.path.dirname(location) != REPO_ROOT:
            raise ImportError(f'"{package}" was imported from {location}, not from this repository ({REPO_ROOT})')


def print_args(args, cfg, logger):
    logger.info("***************")
    logger.info("** Arguments **")
    logger.info("***************")
    for key in sorted(args.__dict__):
        logger.info(f"{key}: {args.__dict__[key]}")
    logger.info("************")
    logger.info("** Config **")
    logger.info("************")
    logger.info(str(cfg))


def _refuse_other_run(args, cfg):
    """Stop with one line (``RunSettingsMismatch``) when ``OUTPUT_DIR`` holds a finished run, or one with
    checkpoints to resume, recorded with other settings or another identity (other data, other weights
    file; ``engine.runs.record``). Checked before anything is written to the folder."""
    from engine.distributed import is_main_process
    from engine.runs import record
    from engine.runs.logparse import run_status

    if not cfg.OUTPUT_DIR or not is_main_process():
        return
    mode = record.run_mode(args)
    old = record.read_record(cfg.OUTPUT_DIR).get(mode)
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict):
        return
    finished = run_status(cfg.OUTPUT_DIR, mode) == "finished"
    if not finished and not record.has_checkpoints(cfg.OUTPUT_DIR):
        return  # nothing reusable there (e.g. a run that stopped on a config error): it is replaced
    settings = record.effective_settings(cfg, args)
    if old.get("hash") == record.settings_hash(settings):
        return
    diffs = record.diff_settings(old["settings"], settings, record.default_settings(REPO_ROOT))
    if diffs:
        raise record.RunSettingsMismatch(record.mismatch_message(
            cfg.OUTPUT_DIR, diffs, "finished" if finished else "half-finished",
            "To keep both, choose another --output-dir; to replace it, delete that folder."))


def _record_run(args, cfg, logger):
    """Write ``OUTPUT_DIR/run_record.json`` (the settings this run uses; ``engine.runs.record``).

    The scripts and the sweep skip a finished folder only when its record equals the requested
    settings; ``train.py`` itself refuses a folder holding a finished or resumable run with other
    settings (:func:`_refuse_other_run`). A folder whose earlier run left no result and no checkpoint
    gets this run's record.
    """
    from engine.distributed import is_main_process
    from engine.runs import record

    if not cfg.OUTPUT_DIR or not is_main_process():
        return
    mode = record.run_mode(args)
    settings = record.effective_settings(cfg, args)
    old = record.read_record(cfg.OUTPUT_DIR).get(mode)
    if isinstance(old, dict) and isinstance(old.get("settings"), dict):
        recorded = old["settings"]
        moved = record.relocated_settings(old, cfg.OUTPUT_DIR)  # the output root was moved with its runs
        if moved.get("--model-dir") == settings.get("--model-dir"):
            recorded = moved
        diffs = record.diff_settings(recorded, settings, record.default_settings(REPO_ROOT))
        if diffs:
            keys = ", ".join(k for k, _, _ in diffs[:6]) + (", ..." if len(diffs) > 6 else "")
            logger.warning(f"{cfg.OUTPUT_DIR} was last run with other settings ({keys}) and left no result "
                           f"or checkpoint; its {record.RECORD_FILE} now records this run's")
    record.write_record(cfg.OUTPUT_DIR, mode, settings, vars(args))
    if mode == "train" or not os.path.isfile(os.path.join(cfg.OUTPUT_DIR, CONFIG_DUMP)):
        from engine.utils.io import atomic_write_text

        atomic_write_text(os.path.join(cfg.OUTPUT_DIR, CONFIG_DUMP), cfg.dump())


#: the run's full effective config, beside log.txt; ``--config-file OUTPUT_DIR/config.yaml`` reloads it
CONFIG_DUMP = "config.yaml"


def _record_precision(args, cfg, trainer):
    """Add what the built trainer computes in to ``run_record.json`` (``engine.precision.precision_record``)."""
    from engine.distributed import is_main_process
    from engine.precision import precision_record
    from engine.runs import record

    if cfg.OUTPUT_DIR and is_main_process() and getattr(trainer, "precision", None) is not None:
        record.write_precision(cfg.OUTPUT_DIR, record.run_mode(args), precision_record(trainer.precision,
                                                                                       trainer.device))


def _check_names(cfg):
    """Fail early (before any output is written) on an unknown trainer or dataset name."""
    from engine.trainer import TRAINER_REGISTRY

    TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if cfg.DATASET.NAME:
        try:
            from engine.data import DATASET_REGISTRY
        except ImportError:
            return
        DATASET_REGISTRY.get(cfg.DATASET.NAME)


def _check_load_epoch(args):
    """``--eval-only --model-dir DIR --load-epoch N``: fail before anything is built when no
    ``DIR/<model name>/model.pth.tar-N`` exists, listing the epochs that do."""
    import glob
    import re

    if not (args.eval_only and args.model_dir and args.load_epoch is not None) or not os.path.isdir(args.model_dir):
        return
    found = glob.glob(os.path.join(glob.escape(args.model_dir), "*", "model.pth.tar-*"))
    epochs = sorted({int(m.group(1)) for m in (re.search(r"model\.pth\.tar-(\d+)$", p) for p in found) if m})
    if args.load_epoch in epochs:
        return
    have = f"the epochs saved there are {', '.join(map(str, epochs))}" if epochs else "it holds no epoch checkpoint"
    raise FileNotFoundError(f"--load-epoch {args.load_epoch}: no {args.model_dir}/<model name>/model.pth.tar-"
                            f"{args.load_epoch}; {have} (--load-epoch takes one of them; without it the best, "
                            f"else the last, is loaded)")


def _user_errors():
    from engine.checkpoint import CheckpointError
    from engine.config import ConfigError
    from engine.registry import RegistryKeyError

    # ValueError: a value that only turns out wrong when the model or data is built (e.g. a prompt
    # depth larger than the backbone, a PREC name); set HARNESS_TRACEBACK=1 to see the traceback.
    from engine.utils.io import WriteError  # a full disk or a permission error while writing a file

    # FloatingPointError: a non-finite training loss (epoch, batch, loss terms, what to try).
    from engine.runs.locks import LockHeld  # another live run writes the same OUTPUT_DIR

    errors = [ConfigError, RegistryKeyError, FileNotFoundError, CheckpointError, ValueError, WriteError,
              FloatingPointError, LockHeld]
    try:
        from engine.data import DatasetError

        errors.append(DatasetError)
    except ImportError:
        pass
    return tuple(errors)


def run(args):
    """Everything after argument parsing; raises the user errors that ``main`` turns into exit 2.

    Started by ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1), the process joins the process
    group first (nccl on CUDA, gloo on CPU; ``engine.distributed``) and leaves it at the end.
    """
    from engine.config import setup_cfg
    from engine.distributed import distributed_session
    from trainers.config import extend_cfg

    cfg = setup_cfg(args, extend=extend_cfg)
    _check_names(cfg)
    _check_load_epoch(args)
    from engine.utils.tracking import check_tracking

    check_tracking(cfg)  # --wandb without the wandb package: one line before anything runs
    with distributed_session(cfg.USE_CUDA):
        return _run_with_cfg(args, cfg)


RUN_LOCK = ".run.lock"


def _run_with_cfg(args, cfg):
    """Hold ``OUTPUT_DIR/.run.lock`` (``engine.runs.locks``, rank 0) for the whole run: a second run
    into the same folder stops with one line while this one lives, on this host or another."""
    from engine.distributed import is_main_process
    from engine.runs.locks import Lock

    if not cfg.OUTPUT_DIR or not is_main_process():
        return _run_locked(args, cfg)
    lock = Lock(os.path.join(cfg.OUTPUT_DIR, RUN_LOCK), what=f"the output folder {cfg.OUTPUT_DIR}",
                hint="two runs must not write one folder: wait for that run, stop it, or choose another --output-dir")
    with lock:
        lock.write_guard(cfg.OUTPUT_DIR)  # lost to another run (paused too long): stop, write nothing more
        return _run_locked(args, cfg)


def _run_locked(args, cfg):
    import torch

    from engine.trainer import build_trainer
    from engine.utils import collect_env_info, set_random_seed, setup_logger

    _refuse_other_run(args, cfg)
    logger = setup_logger(cfg.OUTPUT_DIR)
    _record_run(args, cfg, logger)
    if cfg.SEED >= 0:
        logger.info(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print_args(args, cfg, logger)
    logger.info("Collecting env info ...")
    logger.info(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
    _record_precision(args, cfg, trainer)
    if args.eval_only:
        if args.model_dir:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
        elif args.load_epoch is not None:
            logger.warning("--load-epoch is ignored without --model-dir; evaluating the model as built")
        trainer.test()
        return 0
    if not args.no_train:
        trainer.train()
    return 0


def _interrupted_line(err, args):
    """One line for a run stopped by SIGINT/SIGTERM: where, and how to go on."""
    from engine.utils.signals import signal_name

    name = signal_name(err.signum)
    if err.saved:
        return (f"error: interrupted by {name} at {err.where}; its state is saved in {err.saved}: re-run the same "
                f"command to continue exactly where it stopped (or add --resume {err.saved})")
    if args.eval_only:
        return f"error: interrupted by {name} during the evaluation; re-run the same command"
    out = args.output_dir or "the output folder"
    where = f" at {err.where}" if err.where else ""
    return (f"error: interrupted by {name}{where}; re-run the same command to continue from the last complete "
            f"checkpoint in {out} (if any)")


_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "remote worker",
              "NCCL communicator was aborted", "Socket Timeout", "failed to recv", "Timed out waiting")


def _peer_failure_line(err):
    """One line for a rank of a ``torchrun`` run whose collective failed because another rank ended
    (its own error line says why); None for any other error (a real bug keeps its traceback)."""
    from engine.utils.signals import under_torchrun

    text = str(err)
    if not under_torchrun() or not any(key in text for key in _PEER_GONE):
        return None
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = first.split("] ", 1)[-1] if first.startswith("[/") else first  # drop gloo's source location
    first = first.split(". ", 1)[0]
    rank = os.environ.get("RANK", "?")
    return (f"error: [rank {rank}] stopped: another rank of this torchrun run ended first ({first[:120]}); "
            "that rank's error line says why")


def _report(line, status):
    """Print ``line`` to stderr, append it to log.txt (when the logger has one); return ``status``."""
    from engine.utils.logger import write_to_log_file

    print(line, file=sys.stderr, flush=True)
    write_to_log_file(line)
    return status


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    from compat.dassl_runner import is_dassl_mode

    if is_dassl_mode(argv):  # a foreign Dassl repo's own train.py, in this process (compat/dassl_runner.py)
        from compat.dassl_runner import main as run_dassl_repo

        return run_dassl_repo(argv)
    args = build_parser().parse_args(argv)
    import_registrations()
    from engine.utils import signals

    signals.install()
    try:
        signals.die_with_parent()  # under the sweep: SIGTERM when the sweep dies
        signals.die_with_launcher()  # a torchrun rank: SIGTERM when torchrun dies
        return run(args)
    except signals.Interrupted as e:
        if os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        return _report(_interrupted_line(e, args), signals.exit_code(e.signum))
    except _user_errors() as e:
        if os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        return _report(f"error: {e}", EXIT_USAGE)
    except RuntimeError as e:  # under torchrun: a collective broken because another rank ended first
        line = _peer_failure_line(e)
        if line is None or os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        return _report(line, EXIT_USAGE)
    finally:
        signals.uninstall()


if __name__ == "__main__":
    sys.exit(main())
