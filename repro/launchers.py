"""Sweep launchers through submitit: SLURM job arrays, submitit's local executor, a command list.

Every submitted job runs ``python -m repro.launchers --run-job SPEC.json`` in the repository
root: the planned job (stored as JSON under ``<output-root>/.submitit/jobs``) through
``repro.runner.run_single``, which skips a finished run, resumes a half-finished one and
refuses a folder run with other settings or a test whose training run is not finished.
``--emit-commands FILE`` writes the plan as ``cd REPO && python train.py ...`` lines, in plan order
(dependencies first; :func:`job_command`, the commands ``--dry-run`` shows).

Submission (:func:`launch`): jobs are grouped into waves by dependency depth (training jobs, then
the tests that load them); each wave is one submitit batch, i.e. one SLURM job array
(``--array=0-N%P``, P = ``--array-parallelism``). On SLURM every wave is submitted at once, a wave
after the first with ``--dependency=afterany:<arrays of its unfinished dependencies>`` (a test whose
training failed then fails at once instead of staying pending forever); the launcher returns after
submitting. With ``submitit-local`` the waves run one after the other, at most P jobs at a time, and
the launcher waits for them (a test whose training failed is ``blocked``, not started).

State: each submitted job's entry in ``sweep_state.json`` holds ``launcher``, ``scheduler_id`` (SLURM
``<array>_<index>``, or the local controller's pid), ``host``, ``submitted`` and ``log`` (submitit's
stdout file); ``status`` becomes ``finished`` or ``failed`` when known. :func:`job_status` says
``finished`` (``log.txt`` holds a final result), ``queued``, ``running``, ``failed``, ``blocked``,
``differs`` (the folder holds a run with other settings) or ``pending`` (never submitted) from that
state, the scheduler (``sacct``) and the run's outputs: the words ``--dry-run`` uses too.
A re-run submits every job that is not done, queued or running.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time

from engine.runs.locks import Lock, host_name, pid_alive
from engine.runs.logparse import run_status
from repro.plan import Context, Job
from repro.runner import (SWEEP_HINT, SweepLocked, SweepState, acquire_lock, default_python,
                                 default_train_py, run_single, settings_problem)

LAUNCHERS = ("local", "slurm", "submitit-local")
SUBMITIT_FOLDER = ".submitit"
RUN_LOCK = ".run.lock"  # what train.py holds in its output folder while it runs
JOB_NAME = "harness-sweep"
QUEUED_STATES = ("PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED")
RUNNING_STATES = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")
#: one vocabulary for job states, shared by --status, --dry-run and the sweep's lines (repro.runner)
STATUSES = ("finished", "running", "queued", "pending", "failed", "blocked", "differs")


class LaunchError(ValueError):
    """Bad launcher options or a missing package (one line)."""



def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def add_arguments(parser) -> None:
    """The launcher options of ``tools/sweep.py``."""
    g = parser.add_argument_group("cluster launchers (submitit)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local (default: jobs run here, --gpus), slurm (job arrays through submitit) or "
                        "submitit-local (the same submission code, jobs run as local processes)")
    g.add_argument("--status", action="store_true",
                   help="print each job's state (finished, running, queued, pending, failed, blocked, differs) "
                        "and exit; without plan options it reads the plan the last sweep saved "
                        "(<output-root>/sweep_plan.json)")
    g.add_argument("--emit-commands", default=None, metavar="FILE",
                   help="write the plan as one shell command a line (for any scheduler) and exit")
    g.add_argument("--partition", default=None, help="SLURM partition (sbatch --partition)")
    g.add_argument("--account", default=None, help="SLURM account (sbatch --account)")
    g.add_argument("--time", default="24:00:00",
                   help="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS (default 24:00:00)")
    g.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per job (default 1)")
    g.add_argument("--array-parallelism", type=int, default=None,
                   help="jobs of one array running at once (SLURM %%P; default: all; submitit-local: 1)")
    g.add_argument("--sbatch", nargs="+", default=[], metavar="KEY=VALUE",
                   help="extra sbatch flags, e.g. --sbatch qos=high cpus-per-task=8 (a bare KEY is a switch)")
    g.add_argument("--setup", action="append", default=[], metavar="COMMAND",
                   help="shell command run before each job, e.g. --setup 'source venv/bin/activate' (repeatable)")


def parse_minutes(text) -> int:
    """``90``, ``1:30:00``, ``2-00:00:00`` or ``45:00`` (MM:SS) -> whole minutes (at least 1)."""
    raw = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", raw)
    if not m:
        raise LaunchError(f"--time {raw!r} is not minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.group(1), m.group(2), m.group(3), m.group(4)
    if c is not None:
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:
        secs = int(a) * 3600 + int(b) * 60 if days else int(a) * 60 + int(b)
    else:
        secs = int(a) * 3600 if days else int(a) * 60
    secs += int(days or 0) * 86400
    return max(1, -(-secs // 60))


def parse_sbatch(items) -> dict:
    """``["qos=high", "exclusive"]`` -> ``{"qos": "high", "exclusive": True}`` (submitit's additional_parameters)."""
    out = {}
    for item in items or []:
        key, sep, value = item.lstrip("-").partition("=")
        if not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise LaunchError(f"--sbatch {item!r} is not KEY=VALUE (an sbatch option without its dashes)")
        out[key] = value if sep else True
    return out


# ----------------------------------------------------------------------------- commands
def job_command(job: Job, ctx: Context, python: str | None = None, train_py: str | None = None) -> str:
    """One shell line: ``cd REPO && python train.py <job args>`` (what ``--dry-run`` shows)."""
    python = python or default_python()
    train_py = train_py or default_train_py(ctx.repo_root)
    return f"cd {shlex.quote(ctx.repo_root)} && {job.command_line(python, train_py)}"


def write_job_spec(job: Job, folder: str) -> str:
    """Store ``job`` as JSON in ``folder`` (what :func:`run_job_spec` runs); returns the path."""
    from engine.utils.io import atomic_write_json

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, hashlib.sha256(job.id.encode()).hexdigest()[:16] + ".json")
    atomic_write_json(path, dataclasses.asdict(job))
    return path


def run_job_spec(path: str, repo_root: str) -> int:
    """Run one stored job in this process's machine: ``repro.runner.run_single`` (skips a
    finished run, refuses other settings or an unfinished training run, resumes a half-finished one)."""
    with open(path, "r", encoding="utf-8") as f:
        spec = json.load(f)
    names = {f.name for f in dataclasses.fields(Job)}
    spec = {k: v for k, v in spec.items() if k in names}
    spec["deps"] = tuple(spec.get("deps") or ())
    job = Job(**spec)
    return run_single(job, repo_root=repo_root, emit=lambda msg: print(msg, flush=True))


def emit_commands(jobs, ctx: Context, path: str) -> int:
    """Write the plan to ``path`` as a shell script that keeps the dependencies: the jobs in waves
    (:func:`waves`: a wave's jobs need only earlier waves), a ``# wave k`` comment before each, and
    after every job that needs others a ``# needs: <job id> ...`` comment; one :func:`job_command`
    a line. Run top to bottom it is correct; the lines of one wave may run in parallel."""
    from engine.utils.io import atomic_write_text

    lines = ["#!/usr/bin/env bash", "# tools/sweep.py --emit-commands: one train.py run a line. Waves in order; "
             "the runs of one wave are independent (parallel is fine); a later wave needs earlier ones.",
             "set -e"]
    for k, wave in enumerate(waves(jobs), 1):
        lines.append(f"# wave {k}: {len(wave)} job(s)")
        for j in wave:
            lines.append(job_command(j, ctx) + (f"  # needs: {' '.join(j.deps)}" if j.deps else f"  # {j.id}"))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(jobs)


def waves(jobs) -> list:
    """Jobs grouped by dependency depth inside the plan (depth 0 = no dependency in the plan)."""
    by_id = {j.id: j for j in jobs}
    depth: dict = {}

    def d(job, seen=()):
        if job.id not in depth:
            deps = [by_id[x] for x in job.deps if x in by_id and x not in seen]
            depth[job.id] = 1 + max((d(x, seen + (job.id,)) for x in deps), default=-1)
        return depth[job.id]

    out: dict = {}
    for j in jobs:
        out.setdefault(d(j), []).append(j)
    return [out[k] for k in sorted(out)]


# ----------------------------------------------------------------------------- status
def _expand_array(text: str) -> list:
    """``123_[0-2,5%2]`` -> ``["123_0", "123_1", "123_2", "123_5"]``; other ids as they are."""
    m = re.fullmatch(r"(\d+)_\[([^\]]*)\]", text)
    if not m:
        return [text]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def scheduler_states(job_ids) -> dict:
    """``{job id: SLURM state}`` from ``sacct`` (``{}`` when sacct is missing or fails)."""
    ids = sorted({str(i) for i in job_ids if i})
    if not ids:
        return {}
    cmd = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid and state:
            for one in _expand_array(jid):
                states[one] = state.split()[0].rstrip("+")
    for jid in ids:  # an array id without an index stands for all its tasks
        base = jid.split("_")[0]
        if jid not in states and base in states:
            states[jid] = states[base]
    return states


def job_status(job: Job, entry: dict, sched: dict) -> tuple:
    """``(status, note)`` of one job: :data:`STATUSES`."""
    run = run_status(job.output_dir, job.log_kind)
    jid = entry.get("scheduler_id")
    where = f"{entry.get('launcher')} {jid}" if jid else ""
    if run in ("finished", "partial"):
        problem = settings_problem(job, run, SWEEP_HINT)
        if problem:
            return "differs", problem
    if run == "finished":
        return "finished", where
    holder = Lock(os.path.join(job.output_dir, RUN_LOCK)).holder() if run == "partial" else None
    if holder is not None:  # a live train.py holds the folder, whoever started it
        rec = holder[1]
        return "running", f"{where} pid {rec.get('pid')} on {rec.get('host')}".strip()
    st = entry.get("status")
    if st == "submitted" and entry.get("launcher") == "slurm":
        s = sched.get(str(jid))
        if s is None:
            return ("running" if run == "partial" else "queued"), f"{where} (scheduler not queried)"
        if s in QUEUED_STATES:
            return "queued", where
        if s in RUNNING_STATES:
            return "running", where
        return "failed", f"{where} {s}" + (" without a final result" if s == "COMPLETED" else "")
    if st == "submitted":  # submitit-local: alive while its controller process is
        if entry.get("host") != host_name():
            return ("running" if run == "partial" else "queued"), f"{where} on {entry.get('host')} (not checked)"
        if str(jid).isdigit() and pid_alive(int(jid)):
            return ("running" if run == "partial" else "queued"), where
        return "failed", f"{where} ended without a final result"
    if st in ("failed", "interrupted", "finished"):
        return "failed", (entry.get("error") or st)
    if st == "blocked":
        return "blocked", entry.get("error") or ""
    if st == "running":  # a local sweep's job whose train.py no longer holds its folder
        return "failed", "last attempt was cut off"
    return "pending", ""


def status_table(jobs, state: SweepState | None) -> list:
    """``[(job, status, note)]`` in plan order (one ``sacct`` call for all SLURM jobs)."""
    entries = {j.id: (state.get(j.id) if state else {}) for j in jobs}
    sched = scheduler_states(e.get("scheduler_id") for e in entries.values()
                             if e.get("launcher") == "slurm" and e.get("status") == "submitted")
    return [(j, *job_status(j, entries[j.id], sched)) for j in jobs]


def print_status(jobs, state, emit=print) -> int:
    """Print ``<n> <status> <job id> [note]`` per job and a count line; returns 0 when all are done."""
    counts: dict = {}
    for i, (job, status, note) in enumerate(status_table(jobs, state), 1):
        counts[status] = counts.get(status, 0) + 1
        emit(f"{i:4d} {status:8s} {job.id}" + (f"  [{note}]" if note else ""))
    emit(f"{len(jobs)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s)))
    return 0 if counts.get("finished", 0) == len(jobs) else 1


# ----------------------------------------------------------------------------- submission
def _submitit():
    try:
        import submitit
    except ImportError:
        raise LaunchError("--launcher slurm/submitit-local needs the submitit package: pip install submitit") from None
    return submitit


def make_executor(kind: str, folder: str, opts: dict):
    """A submitit executor for ``slurm`` or ``submitit-local`` with the sweep's options."""
    submitit = _submitit()
    minutes = parse_minutes(opts.get("time") or "24:00:00")
    setup = list(opts.get("setup") or [])
    if kind == "slurm":
        ex = submitit.SlurmExecutor(folder=folder)
        params = {"job_name": JOB_NAME, "time": minutes, "ntasks_per_node": 1,
                  "additional_parameters": parse_sbatch(opts.get("sbatch"))}
        if opts.get("gpus_per_job", 1):  # no --gpus-per-node line for CPU jobs
            params["gpus_per_node"] = int(opts.get("gpus_per_job", 1))
        for key in ("partition", "account"):
            if opts.get(key):
                params[key] = opts[key]
        if opts.get("array_parallelism"):
            params["array_parallelism"] = int(opts["array_parallelism"])
        if setup:
            params["setup"] = setup
        ex.update_parameters(**params)
        return ex
    ex = submitit.LocalExecutor(folder=folder)
    params = {"timeout_min": minutes, "gpus_per_node": opts.get("gpus_per_job", 1)}
    if setup:
        params["setup"] = setup
    ex.update_parameters(**params)
    return ex


def _submit_batch(executor, jobs, ctx, spec_dir, python):
    """One submitit batch (a SLURM array): each job runs ``python -m repro.launchers --run-job
    SPEC`` in the repository root."""
    specs = [write_job_spec(j, spec_dir) for j in jobs]
    cmd = [python or default_python(), "-m", "repro.launchers", "--run-job"]
    with executor.batch():
        handles = [executor.submit(subprocess.check_call, cmd + [spec], cwd=ctx.repo_root) for spec in specs]
    return handles


def _read_lines(path) -> list:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return []


def _last_error(handle) -> str:
    """Why a job failed, from its submitit logs: the last ``ERROR:``/``error:`` line, else the last
    line its command wrote to stderr before submitit's own report."""
    out = [ln for ln in _read_lines(handle.paths.stdout) if not ln.startswith("submitit ")]
    err = []
    for ln in _read_lines(handle.paths.stderr):
        if ln.startswith("submitit "):
            break
        err.append(ln)
    errors = [ln for ln in out + err if ln.startswith(("ERROR:", "error:"))]
    if errors:
        return errors[-1]
    return err[-1] if err else f"the job ended without a final result (logs: {handle.paths.stdout})"


def _wait(handle, poll_s: float = 0.5) -> None:
    """Wait for a local job's process to end (its result file is never unpickled)."""
    while not handle.done():
        time.sleep(poll_s)


def launch(jobs, ctx: Context, kind: str, opts: dict, state_path: str, emit=print, python=None) -> int:
    """Submit every job that is not done, queued or running (module docstring); returns an exit code
    (slurm: 0 once submitted; submitit-local: 0 only when every job is done)."""
    if kind not in ("slurm", "submitit-local"):
        raise LaunchError(f"unknown launcher {kind!r}; expected slurm or submitit-local")
    parse_minutes(opts.get("time") or "24:00:00")
    parse_sbatch(opts.get("sbatch"))
    for key, low in (("gpus_per_job", 0), ("array_parallelism", 1)):
        value = opts.get(key)
        if value is not None and value < low:
            raise LaunchError(f"--{key.replace('_', '-')} must be at least {low}, got {value}")
    _submitit()
    state = SweepState(state_path)
    root = os.path.dirname(os.path.abspath(state_path))
    lock = acquire_lock(root)
    try:
        executor = make_executor(kind, os.path.join(root, SUBMITIT_FOLDER, "%j"), opts)
        spec_dir = os.path.join(root, SUBMITIT_FOLDER, "jobs")
        return _launch_locked(jobs, ctx, kind, opts, state, executor, spec_dir, emit, python)
    finally:
        lock.release()
        _remove_template_folder(os.path.join(root, SUBMITIT_FOLDER, "%j"))


def _remove_template_folder(path: str) -> None:
    """submitit creates its folder template (``.submitit/%j``) literally; remove it when empty."""
    try:
        os.rmdir(path)
    except OSError:
        pass


def _launch_locked(jobs, ctx, kind, opts, state, executor, spec_dir, emit, python):
    current = {j.id: status for j, status, _ in status_table(jobs, state)}
    slurm_ids = {j.id: state.get(j.id).get("scheduler_id") for j in jobs if current[j.id] in ("queued", "running")}
    todo, failed = set(), set()
    for j in jobs:
        if current[j.id] in ("finished", "queued", "running"):
            continue
        problem = settings_problem(j, run_status(j.output_dir, j.log_kind), SWEEP_HINT, ctx.repo_root) or j.problem
        if problem:
            failed.add(j.id)
            state.update(j.id, status="failed", error=problem, ended=_now(), kind=j.kind)
            emit(f"FAILED {j.id}: {problem}")
            continue
        todo.add(j.id)
    skipped = {s: sum(1 for v in current.values() if v == s) for s in ("finished", "queued", "running")}
    emit(f"Sweep ({kind}): {len(jobs)} jobs, {skipped['finished']} finished, "
         f"{skipped['queued'] + skipped['running']} queued or running, {len(todo)} to submit.")
    parallel = opts.get("array_parallelism") or (None if kind == "slurm" else 1)
    done, blocked = {j.id for j in jobs if current[j.id] == "finished"}, set()
    for wave in waves(jobs):
        batch = [j for j in wave if j.id in todo]
        if not batch:
            continue
        if kind == "slurm":
            after = sorted({str(slurm_ids[d]).split("_")[0] for j in batch for d in j.deps
                            if d not in done and slurm_ids.get(d)})
            executor.update_parameters(dependency=("afterany:" + ":".join(after)) if after else None)
            handles = _submit_batch(executor, batch, ctx, spec_dir, python)
            for j, h in zip(batch, handles):
                slurm_ids[j.id] = h.job_id
                _record_submitted(state, j, kind, h)
            emit(f"Submitted {len(batch)} job(s) as SLURM array {handles[0].job_id.split('_')[0]}"
                 + (f" after {', '.join(after)}" if after else ""))
            continue
        ready = []
        for j in batch:  # submitit-local: the wave before has ended; dependencies are known
            bad = [d for d in j.deps if d in failed or d in blocked]
            if bad:
                blocked.add(j.id)
                state.update(j.id, status="blocked", error="a dependency failed: " + ", ".join(bad), ended=_now(),
                             kind=j.kind, launcher=kind)
                emit(f"BLOCKED {j.id}")
            else:
                ready.append(j)
        step = max(1, int(parallel or 1))
        for start in range(0, len(ready), step):
            chunk = ready[start:start + step]
            handles = _submit_batch(executor, chunk, ctx, spec_dir, python)
            for j, h in zip(chunk, handles):
                _record_submitted(state, j, kind, h)
                emit(f"START {j.id} (submitit-local {h.job_id})")
            try:
                for h in handles:
                    _wait(h)
            except KeyboardInterrupt:
                for j, h in zip(chunk, handles):
                    if not h.done():
                        h.cancel(check=False)
                        state.update(j.id, status="interrupted", ended=_now())
                raise
            for j, h in zip(chunk, handles):
                ok = run_status(j.output_dir, j.log_kind) == "finished"
                error = None if ok else _last_error(h)
                if ok:
                    done.add(j.id)
                    state.update(j.id, status="finished", ended=_now(), error=None)
                    emit(f"DONE  {j.id}")
                else:
                    failed.add(j.id)
                    state.update(j.id, status="failed", ended=_now(), error=error)
                    emit(f"FAILED {j.id}: {error}")
    if kind == "slurm":
        emit("Submitted. Follow the jobs with the same command and --status.")
        return 0
    emit(f"Sweep done: {len(done)} finished, {len(failed)} failed, {len(blocked)} blocked.")
    return 0 if not failed and not blocked and len(done) + skipped["queued"] + skipped["running"] == len(jobs) else 1


def _record_submitted(state: SweepState, job: Job, kind: str, handle) -> None:
    attempts = state.get(job.id).get("attempts", 0) + 1
    state.update(job.id, status="submitted", launcher=kind, scheduler_id=str(handle.job_id), host=host_name(),
                 submitted=_now(), ended=None, error=None, kind=job.kind, attempts=attempts,
                 log=str(handle.paths.stdout), output_dir=job.output_dir)


def options_from_args(args) -> dict:
    """The launcher options of parsed ``tools/sweep.py`` arguments."""
    return {"time": args.time, "gpus_per_job": args.gpus_per_job, "array_parallelism": args.array_parallelism,
            "sbatch": args.sbatch, "setup": args.setup, "partition": args.partition, "account": args.account}


def run_from_args(args, jobs, ctx: Context, state_path: str, emit=print) -> int | None:
    """``tools/sweep.py``'s hook: handles ``--status``, ``--emit-commands`` and the submitit launchers;
    returns an exit code, or None for the default local launcher."""
    try:
        if args.emit_commands:
            n = emit_commands(jobs, ctx, args.emit_commands)
            emit(f"wrote {n} commands to {args.emit_commands}")
            return 0
        if args.status:
            state = SweepState(state_path) if os.path.isfile(state_path) else None
            return print_status(jobs, state, emit)
        if args.launcher == "local":
            return None
        return launch(jobs, ctx, args.launcher, options_from_args(args), state_path, emit)
    except (LaunchError, SweepLocked) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"Interrupted; state saved to {state_path}. Re-run the same command to continue.", file=sys.stderr)
        return 130


def main(argv=None) -> int:
    """``python -m repro.launchers --run-job SPEC.json``: what a submitted job runs."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "--run-job":
        print("usage: python -m repro.launchers --run-job SPEC.json", file=sys.stderr)
        return 2
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return run_job_spec(argv[1], repo_root)


if __name__ == "__main__":
    sys.exit(main())
