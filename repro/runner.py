"""Run planned jobs: one at a time (a script call) or as a resumable sweep over a GPU pool.

The run's own ``log.txt`` is the source of truth for "finished" (``engine.runs.logparse``); the
sweep state file ``<output-root>/sweep_state.json`` (written atomically after every change) records
attempts, exit codes, timings and failures, so an interrupted or failed sweep can be inspected and
re-run: finished jobs are skipped, half-finished ones rerun (``train.py`` resumes from the
checkpoint in its output folder), failed ones are retried, jobs whose dependency failed are
``blocked``. Each job's stderr goes to ``<output_dir>/stderr.txt``. A finished or half-finished
folder whose ``run_record.json`` holds other settings than the job's is never skipped, resumed or
overwritten: the job fails with one line naming the differing keys (``engine.runs.record``).

The command is ``[python, train_py] + job.args`` run in the repository root. ``SWEEP_TRAIN_PY`` and
``SWEEP_PYTHON`` environment variables replace ``train.py`` and the interpreter (used by tests).

The sweep owns its children: each gets ``HARNESS_PARENT_PID`` so that ``train.py`` asks Linux for
SIGTERM when the sweep dies, even by SIGKILL (``engine.utils.signals.die_with_parent``); SIGTERM or
Ctrl-C of the sweep stops the running jobs cleanly (their state saved) and records them as
``interrupted``; each ``train.py`` holds ``<output_dir>/.run.lock`` for its lifetime, so a second run of
a job cannot start while the first lives. ``<output root>/.sweep.lock`` keeps two sweeps apart; both
are :class:`engine.runs.locks.Lock` (atomic, stale-safe, usable across hosts).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import threading
import time

from repro._util import atomic_write_json, get_log
from engine.runs.locks import Lock, LockHeld, pid_alive
from engine.runs.logparse import run_status
from repro.plan import Job, checkpoint_problem
from engine.runs.record import check_settings

SCRIPT_HINT = ("To keep both, re-run with another OUTPUT_ROOT (e.g. OUTPUT_ROOT=output_new bash scripts/...); "
               "to replace it, delete that folder.")
SWEEP_HINT = "To keep both, re-run with another --output-root; to replace it, delete that folder."

STATE_FILE = "sweep_state.json"
STOP_GRACE_S = 60  # seconds a stopped job gets to finish its batch and save its state before SIGKILL
LOCK_FILE = ".sweep.lock"


class SweepLocked(RuntimeError):
    """Another live sweep holds the output root."""



def acquire_lock(output_root: str) -> Lock:
    """Take ``<output_root>/.sweep.lock`` (:class:`engine.runs.locks.Lock`); a lock of a dead sweep is
    taken over. Raises :class:`SweepLocked` naming the holder (host, pid) when a live sweep holds it."""
    os.makedirs(output_root, exist_ok=True)
    path = os.path.join(output_root, LOCK_FILE)
    if os.path.isfile(path):  # the single-file lock of older versions
        try:
            with open(path, "r", encoding="utf-8") as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and pid_alive(pid):
            raise SweepLocked(f"another sweep (pid {pid}) is running on {output_root}; wait for it")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    lock = Lock(path, what=f"the sweep output root {output_root}", hint="wait for that sweep, or stop it")
    try:
        return lock.acquire()
    except LockHeld as e:
        raise SweepLocked(str(e)) from None


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (kill, SLURM, docker stop) ends the sweep like Ctrl-C: running jobs are stopped cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_train_py(repo_root: str) -> str:
    return os.environ.get("SWEEP_TRAIN_PY") or os.path.join(repo_root, "train.py")


def default_python() -> str:
    return os.environ.get("SWEEP_PYTHON") or sys.executable


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _tail(path: str, n: int = 1) -> str:
    """Last ``n`` non-empty lines of a text file ('' when unreadable)."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = [ln.rstrip() for ln in f.read().replace("\r", "\n").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


_FIELD_TYPES = {"status": (str,), "kind": (str,), "started": (str,), "ended": (str,), "error": (str,),
                "gpu": (str,), "stderr": (str,), "output_dir": (str,), "rc": (int,), "attempts": (int,),
                "seconds": (int, float)}
_STATUSES = {"running", "finished", "failed", "blocked", "interrupted",
             "submitted"}  # submitted: handed to a scheduler (repro.launchers)


def _read_state(path: str):
    """The parsed JSON of a sweep state file; ``ValueError`` (one line) for anything else. Never unpickled."""
    fresh = "move it away to start a fresh record"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"sweep state file {path} is unreadable ({e.strerror}); {fresh}") from None
    if raw[:1] == b"\x80" or raw[:2] in (b"(d", b"(l", b"}q", b"]q"):
        raise ValueError(f"sweep state file {path} is not JSON (it looks like a Python pickle, which is never "
                         f"loaded); {fresh}")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"sweep state file {path} is not valid JSON ({e}); {fresh}") from None


def _validate_state(path: str, loaded):
    """``loaded`` when it has the sweep state schema, else ``ValueError`` naming the first wrong entry."""
    def bad(what):
        return ValueError(f"sweep state file {path}: {what}; move it away to start a fresh record")

    if not isinstance(loaded, dict) or not isinstance(loaded.get("jobs"), dict):
        raise bad("no 'jobs' object")
    if not isinstance(loaded.get("version", 1), int) or isinstance(loaded.get("version", 1), bool):
        raise bad(f"'version' must be an integer, got {loaded.get('version')!r}"[:200])
    if loaded.get("updated") is not None and not isinstance(loaded["updated"], str):
        raise bad("'updated' must be a string")
    for job_id, entry in loaded["jobs"].items():
        if not isinstance(entry, dict):
            raise bad(f"job {job_id!r} must be an object, got {type(entry).__name__}"[:200])
        for key, value in entry.items():
            types = _FIELD_TYPES.get(key)
            ok = value is None or (isinstance(value, types) and not isinstance(value, bool) if types else
                                   isinstance(value, (str, int, float, bool)))
            if not ok:
                raise bad(f"jobs[{job_id!r}][{key!r}] has a wrong type ({type(value).__name__})"[:200])
        if entry.get("status") is not None and entry["status"] not in _STATUSES:
            raise bad(f"jobs[{job_id!r}]['status'] is {entry['status']!r}, expected one of {sorted(_STATUSES)}"[:200])
    return loaded


class SweepState:
    """``sweep_state.json``: ``{"version": 1, "updated": ts, "jobs": {id: {...}}}``, saved atomically."""

    def __init__(self, path: str):
        self.path = path
        self.data = {"version": 1, "updated": None, "jobs": {}}
        if os.path.isfile(path):
            self.data = _validate_state(path, _read_state(path))

    def get(self, job_id: str) -> dict:
        return self.data["jobs"].get(job_id, {})

    def update(self, job_id: str, **fields) -> None:
        entry = self.data["jobs"].setdefault(job_id, {})
        entry.update(fields)
        self.data["updated"] = _now()
        atomic_write_json(self.path, self.data)


def plan_status(job: Job, state: SweepState | None, by_id: dict) -> tuple:
    """``(status, note)`` for ``--dry-run``: ``finished``; ``blocked`` when a dependency's last
    attempt failed or was blocked (and it is not finished now); otherwise ``pending`` (note says
    ``resume`` for a half-finished folder and the last failure, if any)."""
    status = run_status(job.output_dir, job.log_kind)
    mismatch = settings_problem(job, status, SWEEP_HINT)
    if mismatch:
        return "differs", mismatch
    if status == "finished":
        return "finished", ""
    notes = []
    if job.problem:
        notes.append(job.problem)
    for dep in job.deps:
        dep_job = by_id.get(dep)
        dep_done = dep_job is not None and run_status(dep_job.output_dir, dep_job.log_kind) == "finished"
        last = state.get(dep).get("status") if state else None
        if not dep_done and last in ("failed", "blocked"):
            return "blocked", f"dependency {last}: {dep}"
    if status == "partial":
        notes.append("resume")
    last = state.get(job.id) if state else {}
    if last.get("status") in ("failed", "interrupted"):
        notes.append(f"last attempt {last['status']}" + (f": {last.get('error')}" if last.get("error") else ""))
    elif last.get("status") == "running":
        notes.append("last attempt was cut off (sweep killed)")
    return "pending", "; ".join(notes)


def settings_problem(job: Job, status: str, hint: str, repo_root: str | None = None) -> str | None:
    """For a ``finished`` or ``partial`` job folder, the one-line error when its ``run_record.json``
    holds other settings than the job's (``engine.runs.record``); ``None`` when they are equal, when
    the folder has no record (runs that predate records) or for a job not started yet."""
    if status not in ("finished", "partial"):
        return None
    state = "finished" if status == "finished" else "half-finished"
    root = repo_root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        return check_settings(job.output_dir, job.args, root, state, hint)
    except ValueError as e:  # the requested settings themselves are invalid (ConfigError)
        return f"cannot compare the settings of {job.output_dir} with the requested ones: {e}"


def run_single(job: Job, *, repo_root: str, python: str | None = None, train_py: str | None = None,
               emit=None) -> int:
    """Run one job in the foreground (output streamed); skip it when finished with the same settings,
    refuse (exit 2, one line) when its folder was run with other settings. Returns an exit code."""
    emit = emit or get_log().info
    status = run_status(job.output_dir, job.log_kind)
    mismatch = settings_problem(job, status, SCRIPT_HINT, repo_root)
    if mismatch:
        emit(f"ERROR: {mismatch}")
        return 2
    if status == "finished":
        emit(f"Results are available in {job.output_dir} (finished); skipping.")
        return 0
    if job.problem:
        emit(f"ERROR: {job.problem}")
        return 2
    if job.model_dir is not None and run_status(job.model_dir, "train") != "finished":
        emit(f"ERROR: the training run {job.model_dir} is not finished; run its training script first.")
        return 2
    problem = checkpoint_problem(job)
    if problem:
        emit(f"ERROR: {problem}")
        return 2
    if status == "partial":
        emit(f"{job.output_dir} exists without a final result; resuming.")
    cmd = [python or default_python(), train_py or default_train_py(repo_root)] + job.args
    emit("Running: " + " ".join(cmd))
    rc = subprocess.call(cmd, cwd=repo_root)
    if rc == 0 and run_status(job.output_dir, job.log_kind) != "finished":
        emit(f"ERROR: train.py exited 0 but {job.output_dir}/log.txt has no final result block.")
        return 1
    return rc


class Progress:
    """``[k/N]`` counters and the ETA of a sweep's progress lines: N = jobs to run, k = jobs started;
    ETA = mean seconds of the jobs ended so far x jobs not ended / parallel slots."""

    def __init__(self, total: int, slots: int = 1):
        self.total, self.slots = total, max(1, slots)
        self.n_started, self.n_ended, self.seconds = 0, 0, 0.0

    def started(self) -> str:
        self.n_started += 1
        return f"[{self.n_started}/{self.total}]"

    def ended(self, seconds: float) -> str:
        self.n_ended += 1
        self.seconds += seconds
        return f"[{self.n_ended}/{self.total}]"

    def eta(self) -> str:
        left = self.total - self.n_ended
        if not self.n_ended or left <= 0:
            return ""
        secs = self.seconds / self.n_ended * left / min(self.slots, left)
        return f", ETA {_dt.timedelta(seconds=int(secs))} for {left} more"


class _Running:
    def __init__(self, job, proc, fh, slot, started):
        self.job, self.proc, self.fh, self.slot, self.started = job, proc, fh, slot, started


def run_sweep(jobs, *, repo_root: str, state_path: str, gpus=None, python: str | None = None,
              train_py: str | None = None, emit=None, poll_s: float = 0.2) -> dict:
    """Run every unfinished job of ``jobs`` (plan order, dependencies first).

    ``gpus``: list of device ids; one job per id at a time with ``CUDA_VISIBLE_DEVICES=<id>``.
    None/empty: one job at a time, environment unchanged. Returns counts
    ``{"skipped", "succeeded", "failed", "blocked", "failed_ids", "blocked_ids"}``.
    A ``KeyboardInterrupt`` terminates running jobs, records them as ``interrupted`` and re-raises.
    ``<output root>/.sweep.lock`` keeps two live sweeps off the same output root (:class:`SweepLocked`).
    """
    emit = emit or get_log().info
    python = python or default_python()
    train_py = train_py or default_train_py(repo_root)
    state = SweepState(state_path)
    lock = acquire_lock(os.path.dirname(os.path.abspath(state_path)))
    try:
        with _sigterm_as_interrupt():
            return _run_locked(jobs, state, repo_root=repo_root, gpus=gpus, python=python, train_py=train_py,
                               emit=emit, poll_s=poll_s)
    finally:
        lock.release()


def _run_locked(jobs, state, *, repo_root, gpus, python, train_py, emit, poll_s):
    by_id = {j.id: j for j in jobs}
    done, failed, blocked = set(), set(), set()
    queue = []
    differs = []
    for j in jobs:
        status = run_status(j.output_dir, j.log_kind)
        mismatch = settings_problem(j, status, SWEEP_HINT, repo_root)
        if mismatch:
            differs.append((j, mismatch))
        elif status == "finished":
            done.add(j.id)
        else:
            queue.append(j)
    skipped = len(done)
    emit(f"Sweep: {len(jobs)} jobs, {skipped} finished already, {len(queue)} to run"
         + (f", {len(differs)} run with other settings (not run; see FAILED)." if differs else "."))
    slots = [str(g) for g in gpus] if gpus else [None]
    running: dict = {}
    succeeded = 0
    progress = Progress(len(queue), len(slots))

    def dep_state(job):
        """'ok' when every dependency is finished, 'bad' when one failed/blocked, else 'wait'."""
        for dep in job.deps:
            if dep in done:
                continue
            if dep in failed or dep in blocked:
                return "bad"
            if dep not in by_id:  # dependency outside this plan: trust its folder
                if job.model_dir and run_status(job.model_dir, "train") == "finished":
                    continue
                return "bad"
            return "wait"
        return "ok"

    def fail(job, error, **extra):
        failed.add(job.id)
        state.update(job.id, status="failed", error=error, ended=_now(), kind=job.kind, **extra)
        emit(f"FAILED {job.id}: {error}")

    for job, mismatch in differs:  # recorded with other settings: never reused, never overwritten
        fail(job, mismatch)

    def start(job, slot):
        os.makedirs(job.output_dir, exist_ok=True)
        err_path = os.path.join(job.output_dir, "stderr.txt")
        fh = open(err_path, "w", encoding="utf-8")
        env = dict(os.environ, PYTHONUNBUFFERED="1", HARNESS_PARENT_PID=str(os.getpid()))
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        cmd = [python, train_py] + job.args
        try:
            proc = subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=subprocess.DEVNULL, stderr=fh)
        except OSError as e:
            fh.close()
            fail(job, f"cannot start {cmd[0]}: {e.strerror}")
            return
        attempts = state.get(job.id).get("attempts", 0) + 1
        state.update(job.id, status="running", kind=job.kind, started=_now(), ended=None, rc=None,
                     error=None, gpu=slot, attempts=attempts, stderr=err_path, output_dir=job.output_dir)
        emit(f"{progress.started()} START {job.id}" + (f" on GPU {slot}" if slot is not None else ""))
        running[slot] = _Running(job, proc, fh, slot, time.time())

    def finish(r: _Running, rc: int):
        r.fh.close()
        secs = round(time.time() - r.started, 1)
        job = r.job
        if rc == 0 and run_status(job.output_dir, job.log_kind) == "finished":
            done.add(job.id)
            state.update(job.id, status="finished", rc=0, ended=_now(), seconds=secs, error=None)
            emit(f"{progress.ended(secs)} DONE  {job.id} ({secs:.0f}s){progress.eta()}")
            return True
        error = f"exit code {rc}" if rc != 0 else "exit code 0 but no final result in log.txt"
        last = _tail(os.path.join(job.output_dir, "stderr.txt"))
        progress.ended(secs)
        fail(job, error + (f"; stderr: {last}" if last else ""), rc=rc, seconds=secs)
        return False

    try:
        while queue or running:
            progressed = False
            for slot in slots:
                if slot in running:
                    continue
                for job in list(queue):
                    ds = dep_state(job)
                    if ds == "wait":
                        continue
                    queue.remove(job)
                    progressed = True
                    if ds == "bad":
                        blocked.add(job.id)
                        state.update(job.id, status="blocked", kind=job.kind, ended=_now(),
                                     error="a dependency failed: " + ", ".join(job.deps))
                        emit(f"BLOCKED {job.id}")
                        continue
                    problem = job.problem or checkpoint_problem(job)
                    if problem:
                        fail(job, problem)
                        continue
                    start(job, slot)
                    break
            for slot, r in list(running.items()):
                rc = r.proc.poll()
                if rc is not None:
                    del running[slot]
                    progressed = True
                    succeeded += finish(r, rc)
            if not running and queue and not progressed:
                for job in queue:  # unreachable dependencies: report instead of spinning
                    blocked.add(job.id)
                    state.update(job.id, status="blocked", kind=job.kind, ended=_now(),
                                 error="dependency never became runnable")
                queue.clear()
            if not progressed:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        main = threading.current_thread() is threading.main_thread()
        ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:  # the jobs stop at the end of their current batch, state saved (train.py); a second signal is ignored
            for r in running.values():
                if r.proc.poll() is None:
                    r.proc.terminate()
            for r in running.values():
                try:
                    r.proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    r.proc.wait()
                r.fh.close()
                state.update(r.job.id, status="interrupted", ended=_now(), rc=r.proc.returncode)
        finally:
            for s, h in ignored.items():
                signal.signal(s, h)
        raise
    return {"skipped": skipped, "succeeded": succeeded, "failed": len(failed), "blocked": len(blocked),
            "failed_ids": sorted(failed), "blocked_ids": sorted(blocked)}
