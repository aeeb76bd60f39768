"""Exclusive locks on a shared output folder, safe across processes and hosts (network file systems).

A lock is a folder (e.g. ``<output root>/.sweep.lock``, ``<run folder>/.run.lock``) of generation files
``gen-000000000001``, ``gen-...2``, ...; the highest generation says who holds the lock. Each is JSON
``{"state": "held"|"free", "host", "pid", "heartbeat", "token"}``, written completely to a private temp
file and then published with ``os.link`` (``O_CREAT|O_EXCL`` where hard links are not supported): a
name is created exactly once, atomically, with its full content. Taking the lock = creating generation
``top + 1`` when ``top`` is free or stale, then checking that it is still the highest; so when several
processes take the same stale lock at once exactly one creates the next generation and the others see
it held. Nothing is ever deleted to take a lock, so there is no unlink race; releasing adds a
``free`` generation; the holder removes generations below its own.

A ``held`` generation is stale when its heartbeat is older than the timeout (``HARNESS_LOCK_TIMEOUT``
seconds, default 300), whatever its pid (a pid alive again is a reused pid, or a holder paused for
longer than the timeout); on this host (``HARNESS_HOSTNAME``, else the host name) also at once when
its pid is dead, or when its pid is this very process but no lock object of this process carries its
token (a container restarted with the same pid). A heartbeat more than the timeout in the future is
clock skew: the lock counts as held and the message says so and how to fix it. A holder refreshes its
heartbeat every ``HARNESS_LOCK_HEARTBEAT`` seconds (default 30) from a daemon thread, so clocks of the
hosts must agree to well within the timeout.

A holder that finds its generation no longer the highest (taken over while it was paused) has lost
the lock: :meth:`Lock.write_guard` (``engine.utils.write_guard``) then raises :class:`LockLost` (one
line) at every write into the folder and at the trainer's next safe point, so it writes nothing more.
Creating the lock folder or a generation file on a full disk, a read-only folder or a path through a
file raises ``engine.utils.io.WriteError`` (one line); no temp file is left behind.
"""
import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid

from engine.utils.io import WriteError, os_error_line
from engine.utils.write_guard import add_guard, remove_guard

__all__ = ["Lock", "LockHeld", "LockLost", "host_name", "lock_timeout", "heartbeat_interval"]

#: tokens of the locks this process holds now (a generation naming this pid with another token is stale)
_HELD_TOKENS = set()

_GEN_RE = re.compile(r"^gen-(\d{12})$")


def host_name():
    """``HARNESS_HOSTNAME`` (tests pretend several hosts with it), else ``socket.gethostname()``."""
    return os.environ.get("HARNESS_HOSTNAME") or socket.gethostname()


def lock_timeout():
    """Seconds after which another host's lock without a heartbeat is stale (``HARNESS_LOCK_TIMEOUT``)."""
    return float(os.environ.get("HARNESS_LOCK_TIMEOUT") or 300)


def heartbeat_interval():
    """Seconds between heartbeats of a held lock (``HARNESS_LOCK_HEARTBEAT``)."""
    return float(os.environ.get("HARNESS_LOCK_HEARTBEAT") or 30)


def pid_alive(pid) -> bool:
    """True when process ``pid`` exists on this host (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


class LockHeld(RuntimeError):
    """The lock is held by a live process; one line naming the holder (host, pid, heartbeat age)."""


class LockLost(LockHeld):
    """This process held the lock and another one has taken it over; one line naming the new holder."""


def _os_error(err, path):
    """``WriteError`` (one line naming ``path``) for an ``OSError`` met creating the lock."""
    out = WriteError(os_error_line(err, path))
    out.errno, out.filename = err.errno, os.path.abspath(path)
    return out


class Lock:
    """``Lock(path, what).acquire()`` ... ``release()`` (or ``with``); see the module docstring."""

    def __init__(self, path, what="this folder", hint=""):
        self.path, self.what, self.hint = os.fspath(path), what, hint
        self.token = uuid.uuid4().hex
        self.gen = None
        self._stop = threading.Event()
        self._thread = None
        self._guards = []
        self.lost = False

    # ------------------------------------------------------------------ files
    def _gen_path(self, gen):
        return os.path.join(self.path, f"gen-{gen:012d}")

    def _generations(self):
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_GEN_RE.match, names) if m)

    def _record(self, state):
        return {"state": state, "host": host_name(), "pid": os.getpid(), "heartbeat": time.time(),
                "token": self.token}

    def _read(self, gen):
        """The record of ``gen``; ``{}`` when unreadable; None when it vanished."""
        try:
            with open(self._gen_path(gen), "r", encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _temp(self, record):
        """A complete temp file holding ``record``; on any error it is removed and the error raised."""
        tmp = os.path.join(self.path, f".tmp-{self.token}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        return tmp

    def _create(self, gen, record):
        """Publish ``record`` as generation ``gen``; False when that generation exists already."""
        target = self._gen_path(gen)
        tmp = self._temp(record)
        try:
            try:
                os.link(tmp, target)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some file systems): O_EXCL, content written after
                try:
                    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(record, f)
                return True
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)

    # ------------------------------------------------------------------ staleness
    def _heartbeat_of(self, record, gen):
        beat = record.get("heartbeat")
        if isinstance(beat, (int, float)) and not isinstance(beat, bool):
            return float(beat)
        try:
            return os.stat(self._gen_path(gen)).st_mtime
        except OSError:
            return None

    def stale_reason(self, record, gen):
        """Why a ``held`` generation may be taken over (``''`` when it is live); see the module docstring."""
        host, pid = record.get("host"), record.get("pid")
        beat = self._heartbeat_of(record, gen)
        if beat is None:
            return "vanished"
        age = time.time() - beat
        if host == host_name() and isinstance(pid, int):
            if pid == os.getpid():
                if record.get("token") in _HELD_TOKENS:
                    return ""  # another lock object of this process holds it: live
                return f"pid {pid} is this process, which does not hold it (left by an earlier process with that pid)"
            if not pid_alive(pid):
                return f"pid {pid} on this host is dead"
        if age > lock_timeout():
            alive = " (its pid is alive: reused, or the holder is paused)" if host == host_name() else ""
            return f"no heartbeat for {age:.0f} s{alive}"
        return ""

    def holder(self):
        """``(gen, record)`` of the current live holder, else None."""
        gens = self._generations()
        if not gens:
            return None
        rec = self._read(gens[-1])
        if rec and rec.get("state") == "held" and not self.stale_reason(rec, gens[-1]):
            return gens[-1], rec
        return None

    # ------------------------------------------------------------------ acquire / release
    def acquire(self):
        """Take the lock or raise :class:`LockHeld`; starts the heartbeat thread. Returns ``self``.
        An ``OSError`` creating the lock is a one-line ``WriteError`` naming it."""
        try:
            return self._acquire()
        except OSError as err:
            raise _os_error(err, self.path) from None

    def _acquire(self):
        os.makedirs(self.path, exist_ok=True)
        for _ in range(100):
            gens = self._generations()
            top = gens[-1] if gens else 0
            if top:
                rec = self._read(top)
                if rec is None:
                    continue  # removed under us: look again
                if rec.get("state") != "free" and not self.stale_reason(rec, top):
                    raise self._held_error(rec)
            if not self._create(top + 1, self._record("held")):
                continue  # someone else took this generation: look at it
            if self._generations()[-1] != top + 1:  # a later generation exists (we were slow): not ours
                with contextlib.suppress(OSError):
                    os.remove(self._gen_path(top + 1))
                continue
            self.gen = top + 1
            _HELD_TOKENS.add(self.token)
            self._prune()
            self._start_heartbeat()
            return self
        raise LockHeld(f"could not take the lock {self.path} (too much contention); try again")

    def _held_error(self, rec):
        beat = rec.get("heartbeat")
        who = f"pid {rec.get('pid', '?')} on host {rec.get('host', '?')}"
        if isinstance(beat, (int, float)) and beat - time.time() > lock_timeout():
            return LockHeld(
                f"{self.what} is locked by {who} with a heartbeat {beat - time.time():.0f} s in the future (lock "
                f"{self.path}): the clocks of this host and {rec.get('host', '?')} disagree (clock skew), so whether "
                "that run still lives cannot be told; synchronise the clocks (NTP), or, when no run uses the folder, "
                f"delete the lock folder (rm -r {self.path})")
        age = f", heartbeat {max(0.0, time.time() - beat):.0f} s ago" if isinstance(beat, (int, float)) else ""
        hint = f"; {self.hint}" if self.hint else ""
        return LockHeld(f"{self.what} is in use by {who}{age} (lock {self.path}){hint}")

    def _lost_error(self):
        gens = self._generations()
        rec = (self._read(gens[-1]) or {}) if gens else {}
        if rec.get("state") == "held" and rec.get("token") != self.token:
            who = f"taken over by pid {rec.get('pid', '?')} on host {rec.get('host', '?')}"
        else:
            who = "removed or released by another process"
        return LockLost(
            f"this run lost {self.what}: its lock {self.path} was {who} while this run was paused or could not "
            f"refresh its heartbeat for longer than HARNESS_LOCK_TIMEOUT ({lock_timeout():.0f} s); it stops here "
            "and writes nothing more there (that folder now belongs to the other run; re-run into another "
            "--output-dir if both are wanted)")

    def write_guard(self, folder):
        """Install an ``engine.utils.write_guard`` guard for ``folder``: once this lock is lost, every write
        under ``folder`` (and, while held, the run's safe points: ``path`` None) raises :class:`LockLost`.
        Returns it; :meth:`release` uninstalls it, unless the lock was lost: then writes under ``folder``
        stay refused for the rest of the process (e.g. the error line is not appended to its log.txt)."""
        root = os.path.join(os.path.abspath(folder), "")

        def guard(path):
            if path is None and self.gen is None:
                return  # released: only the folder itself stays guarded once lost
            if path is not None and not os.path.join(os.path.abspath(path), "").startswith(root):
                return
            if self.lost or not self.owned():
                self.lost = True
                raise self._lost_error()

        self._guards.append(add_guard(guard))
        return guard

    def _prune(self):
        for gen in self._generations():
            if gen < self.gen:
                with contextlib.suppress(OSError):
                    os.remove(self._gen_path(gen))

    def owned(self):
        """True while this object's generation is the highest and carries its token."""
        if self.gen is None:
            return False
        gens = self._generations()
        rec = self._read(self.gen)
        return bool(gens) and gens[-1] == self.gen and bool(rec) and rec.get("token") == self.token

    def heartbeat(self):
        """Refresh the heartbeat (atomic replace of our generation file); False once the lock is lost."""
        if not self.owned():
            self.lost = True
            return False
        tmp = self._temp(self._record("held"))
        try:
            os.replace(tmp, self._gen_path(self.gen))
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        return True

    def _start_heartbeat(self):
        self._stop.clear()

        def beat():
            while not self._stop.wait(heartbeat_interval()):
                with contextlib.suppress(OSError):
                    if not self.heartbeat():
                        return

        self._thread = threading.Thread(target=beat, name=f"lock-heartbeat {self.path}", daemon=True)
        self._thread.start()

    def release(self):
        """Stop the heartbeat and publish a ``free`` generation (only while we still hold the lock)."""
        if not self.lost and self.gen is not None and not self.owned():
            self.lost = True
        if not self.lost:  # a lost folder stays guarded: this process writes nothing more into it
            for guard in self._guards:
                remove_guard(guard)
            self._guards = []
        _HELD_TOKENS.discard(self.token)
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        if self.gen is None:
            return
        with contextlib.suppress(OSError):
            if self.owned() and self._create(self.gen + 1, self._record("free")):
                with contextlib.suppress(OSError):
                    os.remove(self._gen_path(self.gen))
        self.gen = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
