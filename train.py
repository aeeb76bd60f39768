"""Dassl-compatible entry point: ``python train.py --root DATA --trainer COMMA --config-file ... [KEY VALUE ...]``.

Flags as in CoOp/MaPLe/COMMA ``train.py``. Flow: config (defaults -> ``trainers.config.extend_cfg`` ->
dataset YAML -> method YAML -> flags -> opts) -> logger (``OUTPUT_DIR/log.txt``, appended) -> seed
(``SEED >= 0``, 0 included) -> banner -> trainer -> ``--eval-only`` test or training.
A bad config, an unknown trainer/dataset name or a missing file prints one ``error: ...`` line to
stderr and exits with status 2.
"""
import argparse
import importlib
import os
import sys

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

EXIT_USAGE = 2


def build_parser():
    parser = argparse.ArgumentParser(description="Prompt learning on CLIP (Dassl-compatible train.py)")
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=None, help="only positive value enables a fixed seed (0 included)")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument(
        "opts", default=None, nargs=argparse.REMAINDER, help="modify config options using the command-line"
    )
    return parser


def import_registrations():
    """Import the repo's ``datasets`` and ``trainers`` packages so that they register their classes."""
    for package in ("datasets", "trainers"):
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


def _user_errors():
    from engine.checkpoint import CheckpointError
    from engine.config import ConfigError
    from engine.registry import RegistryKeyError

    # ValueError: a value that only turns out wrong when the model or data is built (e.g. a prompt
    # depth larger than the backbone, a PREC name); set HARNESS_TRACEBACK=1 to see the traceback.
    errors = [ConfigError, RegistryKeyError, FileNotFoundError, CheckpointError, ValueError]
    try:
        from engine.data import DatasetError

        errors.append(DatasetError)
    except ImportError:
        pass
    return tuple(errors)


def run(args):
    """Everything after argument parsing; raises the user errors that ``main`` turns into exit 2."""
    import torch

    from engine.config import setup_cfg
    from engine.trainer import build_trainer
    from engine.utils import collect_env_info, set_random_seed, setup_logger
    from trainers.config import extend_cfg

    cfg = setup_cfg(args, extend=extend_cfg)
    _check_names(cfg)
    logger = setup_logger(cfg.OUTPUT_DIR)
    if cfg.SEED >= 0:
        logger.info(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print_args(args, cfg, logger)
    logger.info("Collecting env info ...")
    logger.info(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    import_registrations()
    try:
        return run(args)
    except _user_errors() as e:
        if os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
