"""Fault injection for subprocess runs of ``train.py``: ``python tests/fixtures_faults.py FAULT -- ARGS``.

Runs ``train.main(ARGS)`` after installing one fault, chosen by ``FAULT`` (``none`` for a clean run):

- ``kill:step:N``     SIGKILL during the N-th training step (after the backward, before the update)
- ``signal:NAME:N``   send SIGINT/SIGTERM to itself during the N-th training step (a clean stop)
- ``kill:epoch:E``    SIGKILL between epochs, before epoch E (1-based) starts
- ``kill:ckpt:N``     SIGKILL inside the N-th checkpoint write (temp file complete, not yet renamed)
- ``kill:test:1``     SIGKILL during the final test (its first batch)

Steps are counted per process (a resumed run counts from 1 again).
"""
import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

TINY_BACKBONE = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)"]
SELF = os.path.abspath(__file__)


def _kill(sig=signal.SIGKILL):
    os.kill(os.getpid(), sig)


def _counting(target, attr, at, action):
    original = getattr(target, attr)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            action()
        return original(*args, **kwargs)

    setattr(target, attr, wrapper)


def install(fault):
    if fault == "none":
        return
    kind, what, n = fault.split(":")
    n = int(n)
    from engine import trainer

    if kind == "signal":
        _counting(trainer.TrainerBase, "model_update", n, lambda: _kill(getattr(signal, what)))
    elif what == "step":
        _counting(trainer.TrainerBase, "model_update", n, _kill)
    elif what == "epoch":
        run_epoch = trainer.TrainerX.run_epoch

        def before(self):
            if self.epoch + 1 == n:
                _kill()
            return run_epoch(self)

        trainer.TrainerX.run_epoch = before
    elif what == "ckpt":
        import engine.utils.io as io_mod

        real_fsync = io_mod.os.fsync
        seen = {"n": 0}

        def fsync(fd):
            real_fsync(fd)
            if ".model.pth.tar-" in os.readlink(f"/proc/self/fd/{fd}"):
                seen["n"] += 1
                if seen["n"] == n:
                    _kill()

        io_mod.os.fsync = fsync
    elif what == "test":
        from engine.training import progress as progress_mod

        progress = progress_mod.progress

        def in_test(iterable, desc, *args, **kwargs):
            if desc.startswith("test"):
                _kill()
            return progress(iterable, desc, *args, **kwargs)

        progress_mod.progress = in_test
    else:
        raise ValueError(f"unknown fault {fault!r}")


def main():
    fault, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: fixtures_faults.py FAULT -- ARGS"
    import train

    install(fault)
    sys.exit(train.main(args))


if __name__ == "__main__":
    main()
