"""Fault injection for the sweep: its locks (atomic stale takeover, 200-trial race, several hosts on one
shared folder), ownership of its children (SIGTERM and SIGKILL of the sweep never leave a train.py
running unsupervised; a second run of a live job is refused), malicious state files, and a sweep
killed as a whole process group that resumes to the identical table."""
import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import train
from engine.runs.locks import Lock, LockHeld
from repro.runner import SweepState
from fixtures_repro import make_config_root, stub_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "tools", "sweep.py")
COLLECT = os.path.join(REPO, "tools", "collect_results.py")


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_gen(lock_dir, gen, **record):
    os.makedirs(lock_dir, exist_ok=True)
    rec = {"state": "held", "host": "node-a", "pid": 1, "heartbeat": time.time(), "token": "x"}
    rec.update(record)
    with open(os.path.join(lock_dir, f"gen-{gen:012d}"), "w") as f:
        json.dump(rec, f)


# ----------------------------------------------------------------------------- the race
def _racer(barrier, queue, paths):
    os.environ["HARNESS_LOCK_HEARTBEAT"] = "3600"
    for path in paths:
        barrier.wait()
        lock = Lock(path)
        try:
            lock.acquire()
            result = "won"
        except LockHeld:
            result = "held"
        except BaseException as e:  # noqa: BLE001 - any exception is a failure of the test
            result = f"exception {type(e).__name__}: {e}"
        queue.put((path, result))
        barrier.wait()  # the winner holds the lock until both have answered
        lock.release()


def test_stale_lock_race_200_trials_exactly_one_owner(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_HOSTNAME", raising=False)
    host, dead = __import__("engine.runs.locks", fromlist=["host_name"]).host_name(), _dead_pid()
    paths = []
    for i in range(200):
        path = str(tmp_path / f"lock{i}")
        _write_gen(path, 7, host=host, pid=dead)  # stale at once: this host, dead pid
        paths.append(path)
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(barrier, queue, paths)) for _ in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in range(400):
        path, result = queue.get(timeout=120)
        results.setdefault(path, []).append(result)
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    bad = {p: r for p, r in results.items() if sorted(r) != ["held", "won"]}
    assert not bad, f"{len(bad)} of 200 trials without exactly one owner, e.g. {next(iter(bad.items()))}"
    for path in paths:  # every lock ends released, the stale generation superseded
        assert Lock(path).holder() is None


# ----------------------------------------------------------------------------- several hosts
def test_lock_records_host_pid_heartbeat_and_refreshes(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOSTNAME", "node-a")
    monkeypatch.setenv("HARNESS_LOCK_HEARTBEAT", "3600")
    lock = Lock(str(tmp_path / "l")).acquire()
    try:
        (name,) = os.listdir(tmp_path / "l")
        rec = json.loads((tmp_path / "l" / name).read_text())
        assert rec["host"] == "node-a" and rec["pid"] == os.getpid() and rec["state"] == "held"
        first = rec["heartbeat"]
        time.sleep(0.01)
        assert lock.heartbeat()
        assert json.loads((tmp_path / "l" / name).read_text())["heartbeat"] > first
        with pytest.raises(LockHeld, match=f"in use by pid {os.getpid()} on host node-a"):
            Lock(str(tmp_path / "l")).acquire()  # another holder in this very process: live
    finally:
        lock.release()
    assert Lock(str(tmp_path / "l")).holder() is None
    Lock(str(tmp_path / "l")).acquire().release()  # free again


@pytest.mark.parametrize("case", ["other_host_fresh", "other_host_timed_out", "same_host_dead_pid",
                                  "same_host_live_pid", "garbage_fresh"])
def test_staleness_across_hosts(tmp_path, monkeypatch, case):
    monkeypatch.setenv("HARNESS_LOCK_TIMEOUT", "300")
    monkeypatch.setenv("HARNESS_LOCK_HEARTBEAT", "3600")
    monkeypatch.setenv("HARNESS_HOSTNAME", "node-b")
    path = str(tmp_path / "l")
    if case == "other_host_fresh":  # a pid dead here means nothing for another host: only the heartbeat counts
        _write_gen(path, 3, host="node-a", pid=_dead_pid())
    elif case == "other_host_timed_out":
        _write_gen(path, 3, host="node-a", pid=os.getpid(), heartbeat=time.time() - 1000)
    elif case == "same_host_dead_pid":
        _write_gen(path, 3, host="node-b", pid=_dead_pid())  # fresh heartbeat, but dead: stale at once
    elif case == "same_host_live_pid":
        _write_gen(path, 3, host="node-b", pid=os.getppid())
    else:
        os.makedirs(path)
        (tmp_path / "l" / "gen-000000000003").write_text("not json")  # unreadable: judged by its age
    lock = Lock(path)
    if case in ("other_host_fresh", "same_host_live_pid", "garbage_fresh"):
        with pytest.raises(LockHeld) as e:
            lock.acquire()
        assert "\n" not in str(e.value) and path in str(e.value)
        assert sorted(os.listdir(path)) == ["gen-000000000003"]  # untouched
    else:
        lock.acquire()
        assert lock.gen == 4 and sorted(os.listdir(path)) == ["gen-000000000004"]
        lock.release()


def test_second_train_run_into_a_live_runs_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_LOCK_HEARTBEAT", "3600")
    out = tmp_path / "out"
    argv = ["--root", str(tmp_path), "--trainer", "CoOp", "--output-dir", str(out),
            "--dataset-config-file", "configs/datasets/shapes.yaml", "--no-train"]
    with Lock(str(out / ".run.lock")):  # a live run (this process)
        capsys.readouterr()
        rc = train.main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: the output folder {out} is in use by pid {os.getpid()} on host ")
    assert "choose another --output-dir" in err and not (out / "log.txt").exists()
    monkeypatch.setenv("HARNESS_HOSTNAME", "node-b")  # another host's lock, fresh: refused as well
    _write_gen(str(out / ".run.lock"), 9, host="node-a", pid=1)
    assert train.main(argv) == 2 and "on host node-a" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ownership of children
CHILD = textwrap.dedent('''
    """Stub train.py: a long job that stops cleanly on SIGTERM, the way train.py does."""
    import os, sys, time
    sys.path.insert(0, os.environ["REPO"])
    from engine.utils import signals
    out = sys.argv[sys.argv.index("--output-dir") + 1]
    os.makedirs(out, exist_ok=True)
    signals.install()
    try:
        signals.die_with_parent()
        with open(os.path.join(os.environ["MARKS"], "started"), "w") as f:
            f.write(str(os.getpid()))
        with signals.deferred():
            while signals.stop_requested() is None:
                time.sleep(0.02)
            raise signals.Interrupted(signals.stop_requested())
    except signals.Interrupted as e:
        with open(os.path.join(os.environ["MARKS"], "stopped"), "w") as f:
            f.write(signals.signal_name(e.signum))
        sys.exit(signals.exit_code(e.signum))
''')


def _wait_for(path, proc=None, limit=120):
    for _ in range(limit * 50):
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return True
        if proc is not None and proc.poll() is not None and not os.path.exists(path):
            return False
        time.sleep(0.02)
    return False


@pytest.fixture
def long_job(tmp_path):
    croot = make_config_root(str(tmp_path / "cfgroot"))
    (tmp_path / "child.py").write_text(CHILD)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = dict(os.environ, SWEEP_TRAIN_PY=str(tmp_path / "child.py"), REPO=REPO, MARKS=str(marks))
    cmd = [sys.executable, SWEEP, "--config-root", croot, "--output-root", str(tmp_path / "out"),
           "--data", str(tmp_path / "data"), "--protocol", "base2new", "--methods", "CoMMA", "--datasets", "dtd",
           "--seeds", "1"]
    return cmd, env, marks


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_sweep_killed_never_leaves_its_job_running(tmp_path, long_job, sig):
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    cmd, env, marks = long_job
    sweep = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(str(marks / "started"), sweep), sweep.communicate()
        sweep.send_signal(sig)
        out, err = sweep.communicate(timeout=120)
        assert _wait_for(str(marks / "stopped")), "the job outlived its sweep"
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert (marks / "stopped").read_text() == "SIGTERM"  # a clean stop: train.py saves its state
    state = json.loads((tmp_path / "out" / "sweep_state.json").read_text())["jobs"]
    (entry,) = [v for k, v in state.items() if "train_base" in k]
    if sig == signal.SIGTERM:
        assert sweep.returncode == 130 and "Re-run the same command to continue" in err
        assert entry["status"] == "interrupted" and entry["rc"] == 143
    else:
        assert sweep.returncode == -9 and entry["status"] == "running"


# ----------------------------------------------------------------------------- malicious state files
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("content,needle", [
    (pickle.dumps({"jobs": _Evil()}), "looks like a Python pickle, which is never loaded"),
    (pickle.dumps({"jobs": {}}, protocol=0), "looks like a Python pickle"),
    (b'{"jobs": []}', "no 'jobs' object"),
    (b'{"jobs": {"a": 3}}', "job 'a' must be an object"),
    (b'{"jobs": {"a": {"attempts": "many"}}}', "jobs['a']['attempts'] has a wrong type (str)"),
    (b'{"jobs": {"a": {"status": "rm -rf"}}}', "jobs['a']['status'] is 'rm -rf'"),
    (b'{"jobs": {"a": {"x": {"y": 1}}}}', "jobs['a']['x'] has a wrong type (dict)"),
    (b'{"version": "1", "jobs": {}}', "'version' must be an integer"),
    (b"\xff\xfe garbage", "is not valid JSON"),
])
def test_malicious_or_wrongly_typed_state_is_refused_in_one_line(tmp_path, content, needle):
    croot = make_config_root(str(tmp_path / "cfgroot"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sweep_state.json").write_bytes(content)
    with pytest.raises(ValueError, match="move it away to start a fresh record") as e:
        SweepState(str(tmp_path / "out" / "sweep_state.json"))
    assert needle in str(e.value) and "\n" not in str(e.value)
    r = subprocess.run([sys.executable, SWEEP, "--config-root", croot, "--output-root", str(tmp_path / "out"),
                        "--data", str(tmp_path / "data"), "--protocol", "base2new", "--methods", "CoMMA",
                        "--datasets", "dtd", "--seeds", "1"], capture_output=True, text=True, cwd=tmp_path,
                       env=stub_env(str(tmp_path)))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------------------- killed as a process group
GROUP_KILLER = textwrap.dedent('''
    """Stub train.py wrapper: SIGKILLs its whole process group (sweep included) on the victim job, once."""
    import os, runpy, signal, sys
    out = sys.argv[sys.argv.index("--output-dir") + 1]
    marker = os.environ["GROUP_KILL_MARKER"]
    if os.environ["GROUP_KILL_ON"] in out and not os.path.exists(marker):
        open(marker, "w").close()
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "log.txt"), "a") as f:
            f.write("epoch [1/5] batch [1/4] loss 1.0 (1.0) lr 1.0000e-05\\n")
        os.killpg(os.getpgid(0), signal.SIGKILL)
    runpy.run_path(os.environ["REAL_STUB"], run_name="__main__")
''')


def test_sweep_killed_as_process_group_resumes_to_the_same_table(tmp_path):
    croot = make_config_root(str(tmp_path / "cfgroot"))
    args = ["--config-root", croot, "--data", str(tmp_path / "data"), "--protocol", "base2new", "--methods",
            "CoMMA", "--datasets", "dtd", "eurosat", "--seeds", "1"]
    env = stub_env(str(tmp_path))
    clean = subprocess.run([sys.executable, SWEEP, "--output-root", str(tmp_path / "clean"), *args], env=env,
                           cwd=REPO, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    (tmp_path / "killer.py").write_text(GROUP_KILLER)
    env_k = dict(env, SWEEP_TRAIN_PY=str(tmp_path / "killer.py"), REAL_STUB=env["SWEEP_TRAIN_PY"],
                 GROUP_KILL_ON="test_new/eurosat/", GROUP_KILL_MARKER=str(tmp_path / "killed"))
    cmd = [sys.executable, SWEEP, "--output-root", str(tmp_path / "killed_run"), *args]
    first = subprocess.run(cmd, env=env_k, cwd=REPO, capture_output=True, text=True, start_new_session=True)
    assert first.returncode == -9 and (tmp_path / "killed").exists()
    second = subprocess.run(cmd, env=env_k, cwd=REPO, capture_output=True, text=True, start_new_session=True)
    assert second.returncode == 0, second.stdout + second.stderr

    def table(root):
        r = subprocess.run([sys.executable, COLLECT, str(root)], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.replace(str(root), "ROOT")

    assert table(tmp_path / "killed_run") == table(tmp_path / "clean")
    assert "Average over 2 datasets" in table(tmp_path / "clean")
