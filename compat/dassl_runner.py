"""``python train.py --dassl-repo PATH [--clip-weights FILE] [--resumable NAME] -- <the repo's train.py arguments>``.

Runs a Dassl-based research repository's UNMODIFIED ``train.py`` (its ``trainers/``, ``datasets/`` and
forked ``clip/``) in this process, on the engine, through the compatibility package
``compat/dassl_shim/dassl`` (on ``sys.path`` only here). One foreign repo per process, never mixed
with the harness's own ``trainers``/``datasets`` (this process must not have imported them).

Before anything is written, a repo that cannot run stops with one ``error: ...`` line (exit 2): no
``train.py`` or ``trainers/``, a top-level package that clashes with the harness (``engine``,
``compat``, ``dassl``), ``WORLD_SIZE`` > 1 (their trainers step their optimisers themselves, so
ranks would not average gradients), a Dassl name the package does not provide, a ``dassl`` that is
not the harness's. The working directory becomes the repo (as their scripts run), ``sys.argv`` is
their arguments unchanged, and ``runpy`` runs their ``train.py`` as ``__main__``.

Adapters, each named in one log line when it acts:
  * ``dassl``: the harness's package instead of Dassl (checked after import);
  * stdout tee: ``print`` lines go to ``log.txt`` once (``dassl.utils.setup_logger``);
  * CLIP weights: every ``_download``/``_MODELS`` pair of the repo's ``clip`` forks is wrapped, so
    ``load_clip_to_cpu`` reads ``--clip-weights FILE`` whatever the architecture name, else
    ``MODEL.BACKBONE.PATH``, else the CLIP cache (``$CLIP_CACHE_DIR``, default ``~/.cache/clip``,
    SHA-256 checked by their own code);
  * ``.cuda()``: on a host without CUDA, ``Tensor.cuda``/``Module.cuda`` move to the CPU instead of
    failing; ``.half()`` is never touched (the method's own arithmetic);
  * one GPU: ``CUDA_VISIBLE_DEVICES`` is pinned to the first visible GPU (their ``build_model``
    would otherwise wrap the model in ``DataParallel``);
  * datasets: the engine's dataset registry uses the repo's own dataset modules only.

The run gets what native runs get: ``run_record.json`` (with the repo path and its git commit),
``.run.lock``, SIGINT/SIGTERM safe stop, one-line errors, weights-only checksummed checkpoints,
``metrics.json``, TensorBoard, Dassl's log lines. Exact mid-epoch resume only for trainers declared
resumable (``dassl.engine.trainer.RESUMABLE_TRAINERS``, ``--resumable``).
"""
import argparse
import os
import runpy
import subprocess
import sys

HARNESS_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIM_DIR = os.path.join(HARNESS_ROOT, "compat", "dassl_shim")
CLASHING = ("engine", "compat", "dassl")  # top-level names the repo must not define
EXIT_USAGE = 2
RUN_LOCK = ".run.lock"


class RepoError(ValueError):
    """The repo cannot run here (one line)."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="train.py --dassl-repo",
        description="Run a Dassl-based research repo's own train.py, unmodified, on this engine. "
                    "Everything after -- goes to the repo's train.py unchanged.")
    parser.add_argument("--dassl-repo", required=True, metavar="PATH",
                        help="the repository folder holding train.py, trainers/, datasets/ and clip/")
    parser.add_argument("--clip-weights", default="", metavar="FILE",
                        help="CLIP checkpoint file the repo's CLIP loading uses, whatever architecture name "
                             "its config gives (default: MODEL.BACKBONE.PATH, else the CLIP cache)")
    parser.add_argument("--resumable", action="append", default=[], metavar="TRAINER",
                        help="declare the repo's trainer class TRAINER resumable (all its training state in "
                             "its registered models); repeatable")
    return parser


def split_argv(argv):
    """``(harness arguments, the repo's arguments)`` split at the first ``--``."""
    argv = list(argv)
    if "--" not in argv:
        raise RepoError("usage: train.py --dassl-repo PATH [--clip-weights FILE] -- <the repo's train.py arguments> "
                        "(the -- is required)")
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def is_dassl_mode(argv):
    """Whether ``argv`` (train.py's arguments) asks for this mode: ``--dassl-repo`` before any ``--``."""
    head = argv[:argv.index("--")] if "--" in argv else argv
    return any(a == "--dassl-repo" or a.startswith("--dassl-repo=") for a in head)


def git_commit(path):
    """``git rev-parse HEAD`` of the checkout holding ``path`` (None without git)."""
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def check_repo(repo):
    """One-line ``RepoError`` unless ``repo`` looks like a runnable Dassl repo."""
    if not os.path.isdir(repo):
        raise RepoError(f"--dassl-repo {repo}: no such folder")
    if not os.path.isfile(os.path.join(repo, "train.py")):
        raise RepoError(f"--dassl-repo {repo}: no train.py in it (point at the folder holding the repo's train.py)")
    if not os.path.isdir(os.path.join(repo, "trainers")):
        raise RepoError(f"--dassl-repo {repo}: no trainers/ package in it")
    for name in CLASHING:
        for candidate in (name, name + ".py"):
            if os.path.exists(os.path.join(repo, candidate)):
                raise RepoError(f"--dassl-repo {repo}: its top-level {candidate} clashes with the harness's package "
                                f"{name!r}; such a repo cannot run on this engine")
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        world = 1
    if world > 1:
        raise RepoError(f"WORLD_SIZE={world}: a Dassl repo's trainers step their optimisers themselves, so ranks "
                        "would not average gradients; run it as one process (one GPU)")


def check_own_process():
    """This mode needs a process that has not imported the harness's methods/datasets or any clip/dassl."""
    for name in ("trainers", "datasets", "clip", "dassl"):
        if name in sys.modules:
            raise RepoError(f"train.py --dassl-repo must run in its own process (the module {name!r} is already "
                            f"imported here); start it as: python train.py --dassl-repo PATH -- ...")


def check_dassl_is_ours():
    """Import ``dassl`` and make sure it is the harness's package, not a real Dassl."""
    import dassl

    where = os.path.dirname(os.path.abspath(dassl.__file__))
    if not getattr(dassl, "HARNESS_SHIM", False) or os.path.dirname(where) != SHIM_DIR:
        raise RepoError(f"the imported dassl comes from {where}, not the harness's compatibility package {SHIM_DIR}")
    return where


def pin_one_gpu():
    """``CUDA_VISIBLE_DEVICES`` = the first visible GPU; returns the new value when it changed (else None)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip()]
        if len(ids) <= 1:
            return None
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[0].strip()
        return ids[0].strip()
    import torch

    if torch.cuda.device_count() > 1:  # before CUDA is initialised, the variable still takes effect
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
        return "0"
    return None


class Session:
    """What the runner adds to the repo's run: lock, run record, adapters' log lines, weights redirection."""

    def __init__(self, repo, repo_argv, clip_weights="", resumable=()):
        self.repo = repo
        self.repo_argv = list(repo_argv)
        self.clip_weights = clip_weights
        self.resumable = tuple(resumable)
        self.commit = git_commit(repo)
        self.lock = None
        self.cfg = None
        self.logged = False
        self.pending = []  # adapter lines logged once log.txt exists
        self.announced = set()
        self.trainer = None

    # ------------------------------------------------------------------ log lines
    def announce(self, key, line):
        """Log ``line`` once per ``key`` (kept until ``log.txt`` is open, then written)."""
        if key in self.announced:
            return
        self.announced.add(key)
        if self.logged:
            from engine.utils.logger import get_logger

            get_logger().info(line)
        else:
            self.pending.append(line)

    def flush_pending(self):
        from engine.utils.logger import get_logger

        self.logged = True
        for line in self.pending:
            get_logger().info(line)
        self.pending = []

    # ------------------------------------------------------------------ hooks (dassl._harness)
    def on_setup_logger(self, output):
        """Before ``log.txt`` is opened: hold ``OUTPUT_DIR/.run.lock`` for the rest of the process."""
        from engine.runs.locks import Lock

        self.check_packages()  # before anything is written
        folder = os.path.dirname(output) if output.endswith((".txt", ".log")) else output
        if self.lock is None and folder:
            lock = Lock(os.path.join(folder, RUN_LOCK), what=f"the output folder {folder}",
                        hint="two runs must not write one folder: wait for that run, stop it, or choose another "
                             "--output-dir")
            lock.acquire()
            self.lock = lock

    def on_stdout_teed(self, output):
        self.announce("tee", "adapter stdout-tee: print() lines of the repo are written to log.txt (once)")
        self.flush_pending()

    def on_build_trainer(self, cfg, cls):
        """Before the trainer is built: run record, weights redirection, the resume policy line."""
        from dassl.engine.trainer import is_resumable

        self.cfg = cfg
        self.check_packages()
        self._write_record(cfg)
        self.wrap_clip_downloads()
        if is_resumable(cls):
            self.announce("resume", f"adapter resume-policy: {cls.__name__} is declared resumable "
                                    "(exact mid-epoch resume)")
        else:
            self.announce("resume", f"adapter resume-policy: {cls.__name__} is not declared resumable: "
                                    "a stopped run restarts from scratch in a new folder "
                                    "(--resumable NAME declares it)")

    def on_trainer_built(self, trainer):
        self.trainer = trainer

    def check_packages(self):
        """The repo's ``trainers`` (and ``datasets``, ``clip`` when imported) must be the repo's own."""
        repo = os.path.realpath(self.repo) + os.sep
        for name in ("trainers", "datasets", "clip"):
            module = sys.modules.get(name)
            if module is None:
                continue
            path = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
            if not os.path.realpath(path).startswith(repo):
                raise RepoError(f"the package {name!r} was imported from {os.path.dirname(path)}, not from the repo "
                                f"{self.repo}; a repo needs its own {name}/ package here")

    def _write_record(self, cfg):
        from engine.runs import record

        if not cfg.OUTPUT_DIR:
            return
        flags = argparse.ArgumentParser(add_help=False)
        flags.add_argument("--eval-only", action="store_true")
        flags.add_argument("--model-dir", default="")
        flags.add_argument("--load-epoch", type=int, default=None)
        ns, _ = flags.parse_known_args(self.repo_argv)
        settings = record.effective_settings(cfg, ns)
        settings["--dassl-repo"] = os.path.realpath(self.repo)
        settings["--dassl-commit"] = self.commit
        args = {"dassl_repo": os.path.realpath(self.repo), "dassl_commit": self.commit,
                "repo_argv": self.repo_argv, "clip_weights": self.clip_weights, "eval_only": ns.eval_only,
                "model_dir": ns.model_dir, "load_epoch": ns.load_epoch}
        record.write_record(cfg.OUTPUT_DIR, record.run_mode(ns), settings, args)

    # ------------------------------------------------------------------ adapters
    def wrap_clip_downloads(self):
        """Wrap ``_download`` (and, with ``--clip-weights``, ``_MODELS``) of every clip fork of the repo."""
        repo = os.path.realpath(self.repo) + os.sep
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if not path or not os.path.realpath(path).startswith(repo):
                continue
            download, models = getattr(module, "_download", None), getattr(module, "_MODELS", None)
            if not callable(download) or not isinstance(models, dict) or getattr(download, "_harness", False):
                continue
            module._download = self._download_wrapper(module.__name__, download)
            if self.clip_weights:
                module._MODELS = AnyArchitecture(models)

    def _download_wrapper(self, module_name, original):
        session = self

        def _download(url, root=None, *args, **kwargs):
            cfg = session.cfg
            arch = url[len(AnyArchitecture.PREFIX):] if url.startswith(AnyArchitecture.PREFIX) else url
            if session.clip_weights:
                session.announce("weights", f"adapter clip-weights: {module_name}._download("
                                            f"{os.path.basename(arch)}) reads --clip-weights {session.clip_weights}")
                return session.clip_weights
            path = cfg.MODEL.BACKBONE.PATH if cfg is not None and "PATH" in cfg.MODEL.BACKBONE else ""
            if path:
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"MODEL.BACKBONE.PATH {path}: no such file")
                session.announce("weights", f"adapter clip-weights: {module_name}._download reads "
                                            f"MODEL.BACKBONE.PATH {path}")
                return path
            cache = os.path.expanduser(os.environ.get("CLIP_CACHE_DIR") or "~/.cache/clip")
            session.announce("weights", f"adapter clip-weights: {module_name}._download looks in the CLIP cache "
                                        f"{cache}")
            try:
                return original(url, cache, *args, **kwargs)
            except Exception as err:  # no network, bad checksum: one line
                raise FileNotFoundError(
                    f"CLIP weights {os.path.basename(url)} are not in {cache} and could not be downloaded "
                    f"({type(err).__name__}: {err}); pass --clip-weights FILE before -- or MODEL.BACKBONE.PATH FILE"
                ) from None

        _download._harness = True
        return _download

    def redirect_cuda(self):
        """On a host without CUDA: ``Tensor.cuda``/``Module.cuda`` -> ``.to("cpu")``, announced at first use."""
        import torch

        if torch.cuda.is_available():
            return False
        session = self

        def announce():
            session.announce("cuda", "adapter cuda-redirect: .cuda() calls of the repo run on cpu (this host has no "
                                     "CUDA); .half() calls are left as written")

        def tensor_to_device(tensor, device=None, non_blocking=False, **kwargs):
            announce()
            return tensor.to("cpu", non_blocking=non_blocking)

        def module_to_device(module, device=None):
            announce()
            return module.to("cpu")

        setattr(torch.Tensor, "cuda", tensor_to_device)
        setattr(torch.nn.Module, "cuda", module_to_device)
        return True

    def close(self):
        from dassl.utils.logger import StdoutTee

        if isinstance(sys.stdout, StdoutTee):
            sys.stdout.close_tee()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class AnyArchitecture(dict):
    """``clip._MODELS`` under ``--clip-weights``: any architecture name maps to a placeholder URL."""

    PREFIX = "harness-clip-weights:"

    def __missing__(self, key):
        return self.PREFIX + str(key)

    def __contains__(self, key):
        return True


def _user_errors():
    from engine.checkpoint import CheckpointError
    from engine.config import ConfigError
    from engine.data import DatasetError
    from engine.registry import RegistryKeyError
    from engine.runs.locks import LockHeld
    from engine.utils.io import WriteError

    return (RepoError, ConfigError, RegistryKeyError, FileNotFoundError, CheckpointError, ValueError, WriteError,
            FloatingPointError, LockHeld, DatasetError)


def _missing_dassl_name(err, repo):
    """The one line for an import of a Dassl name this package lacks (None if ``err`` is about something else)."""
    text = str(err)
    if isinstance(err, AttributeError) and "is not provided by the harness's Dassl" in text:
        return f"error: {repo}: {text}"
    if isinstance(err, ImportError):
        name = getattr(err, "name", None) or ""
        if name.startswith("dassl"):
            if isinstance(err, ModuleNotFoundError):
                return f"error: {repo} imports {name}, which the harness's Dassl compatibility package does not provide"
            what = text.split("cannot import name ")[-1].split(" from ")[0].strip("'\"")
            return (f"error: {repo} imports {name}.{what}, which the harness's Dassl compatibility package "
                    "does not provide")
    return None


def _report(line, status):
    from engine.utils.logger import write_to_log_file

    print(line, file=sys.stderr, flush=True)
    write_to_log_file(line)
    return status


def main(argv):
    """Entry from ``train.py``: returns the exit status."""
    try:
        ours, theirs = split_argv(argv)
        args = build_parser().parse_args(ours)
        repo = os.path.abspath(os.path.expanduser(args.dassl_repo))
        check_repo(repo)
        check_own_process()
        clip_weights = os.path.abspath(os.path.expanduser(args.clip_weights)) if args.clip_weights else ""
        if clip_weights and not os.path.isfile(clip_weights):
            raise RepoError(f"--clip-weights {args.clip_weights}: no such file")
    except RepoError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    pinned = pin_one_gpu()
    sys.path[:] = [SHIM_DIR, repo, HARNESS_ROOT] + [p for p in sys.path
                                                    if p not in ("", SHIM_DIR, repo, HARNESS_ROOT)
                                                    and os.path.abspath(p) not in (HARNESS_ROOT, repo)]
    from engine.utils import signals

    session = Session(repo, theirs, clip_weights, args.resumable)
    try:
        where = check_dassl_is_ours()
        from dassl import _harness
        from dassl.engine import trainer as shim_trainer

        shim_trainer.RESUMABLE_TRAINERS.update(args.resumable)
        _harness.HOOKS.update(setup_logger=session.on_setup_logger, stdout_teed=session.on_stdout_teed,
                              build_trainer=session.on_build_trainer, trainer_built=session.on_trainer_built)
        import engine.data.registry as dataset_registry

        dataset_registry.DATASET_PACKAGES = ()  # the repo's train.py imports its own dataset modules
        session.announce("repo", f"Dassl repo: {repo} (commit {session.commit or 'unknown: not a git checkout'})")
        session.announce("dassl", f"adapter dassl: the harness's Dassl compatibility package ({where}) stands in "
                                  "for Dassl")
        session.announce("datasets", "adapter datasets: the engine's dataset registry holds only the repo's datasets")
        if pinned is not None:
            session.announce("gpu", f"adapter one-gpu: CUDA_VISIBLE_DEVICES={pinned} (Dassl repos wrap the model in "
                                    "DataParallel when several GPUs are visible)")
        session.redirect_cuda()
    except RepoError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    signals.install()
    old_argv, old_cwd = sys.argv, os.getcwd()
    try:
        signals.die_with_parent()
        sys.argv = [os.path.join(repo, "train.py")] + theirs
        os.chdir(repo)
        try:
            runpy.run_path(os.path.join(repo, "train.py"), run_name="__main__")
        except SystemExit as e:
            code = e.code
            if code is None:
                return 0
            if isinstance(code, int):
                return code
            print(code, file=sys.stderr, flush=True)
            return 1
        return 0
    except signals.Interrupted as e:
        if os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        name = signals.signal_name(e.signum)
        if e.saved:
            line = (f"error: interrupted by {name} at {e.where}; its state is saved in {e.saved}: re-run the same "
                    f"command to continue exactly where it stopped")
        else:
            line = (f"error: interrupted by {name}" + (f" at {e.where}" if e.where else "") +
                    "; nothing was saved to resume from: re-run it into a new --output-dir")
        return _report(line, signals.exit_code(e.signum))
    except (ImportError, AttributeError) as e:
        line = _missing_dassl_name(e, repo)
        if line is None or os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        return _report(line, EXIT_USAGE)
    except _user_errors() as e:
        if os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        return _report(f"error: {e}", EXIT_USAGE)
    except AssertionError as e:  # Dassl code checks its config with assert (yacs: "Non-existent key: X")
        if not str(e) or os.environ.get("HARNESS_TRACEBACK") == "1":
            raise
        return _report(f"error: {repo}: {str(e).splitlines()[0]}", EXIT_USAGE)
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        session.close()
        signals.uninstall()
