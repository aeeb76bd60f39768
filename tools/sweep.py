"""One resumable command for the paper's protocols (base2new, xd, dg), CoOp's few-shot protocol
(fewshot) and the evaluation of released weights (released), over methods, datasets, seeds.

    python tools/sweep.py --protocol all --methods CoMMA MaPLe --datasets all --seeds 1 2 3 \
        [--gpus 0,1] [--dry-run] [--output-root output] [--data DATA] [--upstream-numerics] [--] [KEY VALUE ...]
    python tools/sweep.py --protocol fewshot --methods CoOp --datasets all --shots 1 2 4 8 16
    python tools/sweep.py --protocol released --methods MaPLe --weights DIR
    python tools/sweep.py --protocol base2new --methods CoOp CoMMA --opts-for CoOp OPTIM.MAX_EPOCH 200 \
        --opts-for CoMMA OPTIM.MAX_EPOCH 20 -- DATASET.NUM_SHOTS 8

Plans every job (order: protocol -> method -> seed -> dataset; see repro/plan.py), skips
finished ones (their log.txt has a final result and their run_record.json the requested settings),
runs the rest one per listed GPU (or one at a time), records failures in
``<output-root>/sweep_state.json`` and continues; dependent jobs of a failed one are ``blocked``; a
folder run with other settings fails with one line (``engine.runs.record``). Exit code 0 only when
every job is finished. Re-run the same command to continue after an interruption or a failure.
``--dry-run`` prints one line per job: ``<status> <job id> [note]`` with status finished / pending /
blocked / differs (the words ``--status`` uses too, plus running / queued), each followed by the job's
full ``train.py`` command line (shell-quoted, run in the repository root). Progress lines say
``[k/N]`` and, once a job has ended, an ETA. At the end the tables of the sweep's protocols are
printed (and the few-shot plot written). ``--opts-for METHOD KEY VALUE ...`` (repeatable) gives one
method's jobs extra opts after the global ones. Every sweep saves its arguments in
``<output-root>/sweep_plan.json``; ``--status`` without plan options reports that plan. ``--help`` is
written for the console (:data:`DESCRIPTION`, :data:`EPILOG`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from engine.utils.io import atomic_write_json  # noqa: E402
from repro.methods import FOREIGN, METHOD_ORDER, METHODS, XD_SOURCE, get_method  # noqa: E402
from repro.plan import Context, PlanError, build_plan, expand_protocols, split_opts  # noqa: E402
from repro.runner import (STATE_FILE, SweepLocked, SweepState, default_python,  # noqa: E402
                                 default_train_py, plan_status, run_sweep)
from repro.launchers import add_arguments as add_launcher_arguments  # noqa: E402
from repro.launchers import run_from_args as run_launcher  # noqa: E402
from engine.utils.cli import split_argv  # noqa: E402
from engine.utils.io import os_error_line  # noqa: E402


DESCRIPTION = ("Run the papers' protocols (base-to-novel, cross-dataset, domain generalisation), CoOp's\n"
               "few-shot protocol or the evaluation of released weights for several methods, datasets\n"
               "and seeds with one resumable command. Every job runs with the method's official\n"
               "precision (TRAINER.<NODE>.PREC; VPT fp32). Trailing KEY VALUE pairs override the\n"
               "config of every run.")
EPILOG = """examples:
  python tools/sweep.py --protocol all --methods CoMMA MaPLe --datasets all --seeds 1 2 3 --gpus 0,1
  python tools/sweep.py --protocol base2new --methods CoMMA --datasets shapes --seeds 1 --dry-run
  python tools/sweep.py --protocol base2new --datasets shapes --seeds 1 -- OPTIM.MAX_EPOCH 1
  python tools/sweep.py --protocol fewshot --methods CoOp CoMMA --datasets all --shots 1 2 4 8 16
  python tools/sweep.py --protocol released --methods MaPLe --weights weights/maple
  python tools/sweep.py --protocol all --methods CoMMA --datasets all --launcher slurm --partition gpu --time 4:00:00
  python tools/sweep.py --protocol all --methods CoMMA --datasets all --status
  python tools/sweep.py --status --output-root output      (the plan of the last sweep there)
  python tools/sweep.py --protocol base2new --methods CoOp CoMMA --datasets shapes \
      --opts-for CoOp OPTIM.MAX_EPOCH 200 --opts-for CoMMA OPTIM.MAX_EPOCH 20 -- DATASET.NUM_SHOTS 8

Finished runs are skipped when their run_record.json holds the requested settings; half-finished
runs resume; a folder run with other settings fails with one line naming the differing keys (use
another --output-root to keep both). Failures go to <output-root>/sweep_state.json and the sweep
continues; jobs that need a failed one are blocked. Re-run the same command to continue. Exit status
0 only when every job is finished. --dry-run prints one line per job: number, status (finished,
pending, blocked, differs: the words of --status), job id, note; then the job's train.py command
line, indented. --opts-for METHOD KEY VALUE [KEY VALUE ...] (repeatable): opts for one method's jobs
(put global opts after -- when an --opts-for group comes last). Datasets may be NAME=CONFIG (the
runs are filed under NAME, e.g. flowers=image_folder). --protocol
all means base2new xd dg; fewshot and released are asked for by name."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", nargs="+", default=["all"],
                   help="base2new, xd, dg, fewshot, released, or all (= base2new xd dg)")
    p.add_argument("--methods", nargs="+", default=["CoMMA"],
                   help=" ".join(METHODS[k].trainer for k in METHOD_ORDER) + ", or all (the registered methods); "
                        "the official code of a method: " + " ".join(s.folder for s in FOREIGN.values()) +
                        " (checkouts from $HARNESS_DASSL_REPOS or $HARNESS_REPO_<NAME>; docs/DASSL_REPOS.md)")
    p.add_argument("--datasets", nargs="+", default=["all"],
                   help="base-to-novel datasets and xd targets (config stems), or all (the 11 of the papers)")
    p.add_argument("--dg-targets", nargs="+", default=None,
                   help="domain-generalisation targets (default: imagenetv2 imagenet_sketch imagenet_a imagenet_r)")
    p.add_argument("--source", default=XD_SOURCE, help="xd/dg training dataset (default imagenet)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds (default: 1 2 3; released: every seed found in --weights)")
    p.add_argument("--shots", nargs="+", type=int, default=None,
                   help="fewshot protocol: shots per class (default: 1 2 4 8 16)")
    p.add_argument("--weights", default=None, metavar="DIR",
                   help="released protocol: folder of official checkpoints, <DIR>/<dataset>/base/seed<N>/"
                        "<model name>/model.pth.tar-<epoch> (MaPLe/COMMA release layout)")
    p.add_argument("--upstream-numerics", action="store_true",
                   help="also pass TRAINER.<NODE>.UPSTREAM_NUMERICS True: the official code's fp16 arithmetic "
                        "(docs/METHODS.md); use another --output-root, it changes the run settings")
    p.add_argument("--plot-dir", default=None, metavar="DIR",
                   help="where a fewshot sweep writes its plot (default: <output-root>/plots)")
    p.add_argument("--gpus", default="", help="comma-separated GPU ids; one job per GPU at a time")
    p.add_argument("--dry-run", action="store_true", help="print the plan with each job's status and exit")
    p.add_argument("--output-root", default=os.path.join(REPO_ROOT, "output"),
                   help="folder of the output tree and sweep_state.json (default: <repo>/output)")
    p.add_argument("--data", default=os.environ.get("DATA") or os.path.join(REPO_ROOT, "data"),
                   help="dataset root (default $DATA, else <repo>/data)")
    p.add_argument("--config-root", default=REPO_ROOT,
                   help="folder holding configs/trainers and configs/datasets (default: the repo)")
    p.add_argument("--cfg", default=None, help="use this config name for every method (smoke runs)")
    p.add_argument("--clip-weights", default=None, metavar="FILE",
                   help="foreign methods (e.g. MaPLe@upstream, the official code run through train.py --dassl-repo): "
                        "the CLIP checkpoint their own CLIP loading reads, whatever architecture name they ask for")
    add_launcher_arguments(p)
    return p


def print_dry_run(jobs, state, python: str, train_py: str) -> None:
    """One status line per job, then its ``train.py`` command line (indented), then the counts."""
    by_id = {j.id: j for j in jobs}
    counts = {}
    print(f"# commands run in {REPO_ROOT}")
    for i, job in enumerate(jobs, 1):
        status, note = plan_status(job, state, by_id)
        counts[status] = counts.get(status, 0) + 1
        print(f"{i:4d} {status:8s} {job.id}" + (f"  [{note}]" if note else ""))
        print("       " + job.command_line(python, train_py))
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("finished", "pending", "blocked"))
    if counts.get("differs"):
        summary += f", {counts['differs']} differs"
    print(f"{len(jobs)} jobs: {summary}")


def print_tables(protocols, output_root: str, plot_dir: str | None) -> None:
    """At the end of a sweep: the tables of its protocols (Markdown; base2new/xd/dg as
    ``tools/collect_results.py`` prints them, then fewshot and released) and the few-shot plot."""
    from repro.report.collect import scan
    from repro.report.tables import build_tables, render_markdown

    paper_protocols = [p for p in protocols if p in ("base2new", "xd", "dg")]
    if paper_protocols and os.path.isdir(output_root):
        runs, _ = scan(output_root)
        tables = {k: v for k, v in build_tables([r for r in runs if r.protocol in paper_protocols]).items()
                  if k in paper_protocols}
        if tables:
            print("\n" + render_markdown(tables))
    if "fewshot" in protocols and os.path.isdir(os.path.join(output_root, "fewshot")):
        runs, _ = scan(output_root)
        tables = build_tables([r for r in runs if r.protocol == "fewshot"])
        print(render_markdown(tables))
        if tables:
            from repro.report.plots import write_plots

            for path in write_plots(tables, plot_dir or os.path.join(output_root, "plots")):
                print(f"wrote {path}")
    if "released" in protocols and os.path.isdir(os.path.join(output_root, "released")):
        runs, _ = scan(os.path.join(output_root, "released"))
        print("Released weights:\n")
        print(render_markdown(build_tables(runs)))


PLAN_FILE = "sweep_plan.json"
#: flags that choose the plan; --status without any of them reads the saved plan
PLAN_FLAGS = ("--protocol", "--methods", "--datasets", "--dg-targets", "--source", "--seeds", "--shots", "--weights",
              "--upstream-numerics", "--cfg", "--opts-for", "--data", "--config-root", "--clip-weights")


def extract_opts_for(argv) -> tuple:
    """``(argv without the --opts-for groups, {method key: [KEY, VALUE, ...]})``. A group is
    ``--opts-for METHOD KEY VALUE [KEY VALUE ...]``: the pairs run to the next ``--`` flag (global
    opts after an ``--opts-for`` group go after ``--``)."""
    rest, per = [], {}
    argv = list(argv)
    i = 0
    while i < len(argv):
        if argv[i] != "--opts-for":
            rest.append(argv[i])
            i += 1
            continue
        if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
            raise PlanError("--opts-for needs a method and KEY VALUE pairs, e.g. --opts-for CoOp OPTIM.MAX_EPOCH 200")
        method = argv[i + 1]
        try:
            key = get_method(method).key
        except KeyError as e:
            raise PlanError(f"--opts-for: {e.args[0] if e.args else method}") from None
        j = i + 2
        pairs = []
        while j < len(argv) and not argv[j].startswith("--"):
            pairs.append(argv[j])
            j += 1
        if not pairs:
            raise PlanError(f"--opts-for {method} needs KEY VALUE pairs, e.g. OPTIM.MAX_EPOCH 200")
        per.setdefault(key, []).extend(split_opts(pairs))
        i = j
    return rest, per


def _saved_plan_argv(output_root: str):
    """The argument list of the last sweep on ``output_root`` (``sweep_plan.json``), or None."""
    try:
        with open(os.path.join(output_root, PLAN_FILE), "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    argv = data.get("argv") if isinstance(data, dict) else None
    return [str(a) for a in argv] if isinstance(argv, list) else None


def _save_plan_argv(output_root: str, argv) -> None:
    os.makedirs(output_root, exist_ok=True)
    skip = {"--status", "--dry-run"}
    atomic_write_json(os.path.join(output_root, PLAN_FILE), {"argv": [a for a in argv if a not in skip]})


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv_rest, opts_for = extract_opts_for(argv)
    except PlanError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    flags, raw_opts = split_argv(argv_rest)
    args = build_parser().parse_args(flags)
    if args.status and not raw_opts and not any(a.split("=")[0] in PLAN_FLAGS for a in argv):
        saved = _saved_plan_argv(os.path.abspath(args.output_root))
        if saved is not None:  # --status alone: the plan of the last sweep on this output root
            print(f"# plan of the last sweep on {os.path.abspath(args.output_root)} ({PLAN_FILE})")
            argv_rest, opts_for = extract_opts_for(saved)
            flags, raw_opts = split_argv(argv_rest)
            args = build_parser().parse_args(flags + ["--status", "--output-root", args.output_root])
    try:
        opts = split_opts(raw_opts)
        protocols = expand_protocols(args.protocol)
        seeds = args.seeds
        if seeds is None and protocols != ["released"]:
            seeds = [1, 2, 3]
        ctx = Context(repo_root=REPO_ROOT, output_root=os.path.abspath(args.output_root),
                      data_root=os.path.abspath(args.data), opts=opts, source=args.source,
                      cfg_override=args.cfg, config_root=os.path.abspath(args.config_root),
                      upstream_numerics=args.upstream_numerics,
                      weights=os.path.abspath(args.weights) if args.weights else None, opts_for=opts_for,
                      clip_weights=os.path.abspath(args.clip_weights) if args.clip_weights else None)
        jobs = build_plan(ctx, protocols, args.methods, args.datasets, seeds, args.dg_targets, args.shots)
        state_path = os.path.join(ctx.output_root, STATE_FILE)
        state = SweepState(state_path) if os.path.isfile(state_path) else None
    except (PlanError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"ERROR: {msg}", file=sys.stderr)
        return 2
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    python, train_py = default_python(), default_train_py(REPO_ROOT)
    if args.dry_run:
        print_dry_run(jobs, state, python, train_py)
        return 0
    if not args.status and not args.emit_commands:
        try:
            _save_plan_argv(ctx.output_root, argv)
        except OSError as e:  # a read-only or full output root, a file in the way: one line naming it
            print(f"ERROR: {os_error_line(e, e.filename or ctx.output_root)}", file=sys.stderr)
            return 2
    launched = run_launcher(args, jobs, ctx, state_path, emit=lambda msg: print(msg, flush=True))
    if launched is not None:  # --status, --emit-commands, --launcher slurm / submitit-local
        return launched
    try:
        result = run_sweep(jobs, repo_root=REPO_ROOT, state_path=state_path, gpus=gpus, python=python,
                           train_py=train_py, emit=lambda msg: print(msg, flush=True))
    except SweepLocked as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full output root, a file in the way: one line naming it
        print(f"ERROR: {os_error_line(e, e.filename or ctx.output_root)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"Interrupted; state saved to {state_path}. Re-run the same command to continue.", file=sys.stderr)
        return 130
    print(f"Sweep done: {result['skipped']} skipped (finished), {result['succeeded']} ran OK, "
          f"{result['failed']} failed, {result['blocked']} blocked. State: {state_path}")
    for jid in result["failed_ids"]:
        print(f"  failed:  {jid}")
    for jid in result["blocked_ids"]:
        print(f"  blocked: {jid}")
    print_tables(protocols, ctx.output_root, args.plot_dir)
    return 1 if result["failed"] or result["blocked"] else 0


if __name__ == "__main__":
    sys.exit(main())
