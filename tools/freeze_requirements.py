"""Write ``requirements-lock.txt``: the installed versions of what ``requirements.txt`` pulls in.

``scripts/install.sh`` installs with ``pip install -c requirements-lock.txt``, so a fresh machine gets
the versions CI tested. The lock holds every distribution in the dependency closure of
``requirements.txt`` as installed in the running Python, pinned with ``==``, except torch,
torchvision and the packages only they need (``install.sh`` keeps an existing torch, e.g. a CUDA
build matching the driver). Run it in the environment CI passed with::

    python tools/freeze_requirements.py            # rewrites requirements-lock.txt
    python tools/freeze_requirements.py --check    # exit 1 when the lock differs from this environment
"""
import argparse
import importlib.metadata as md
import os
import platform
import re
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_ROOTS = ("torch", "torchvision")


def canonical(name):
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(path):
    """Names listed in a requirements file (comments, blank lines and options skipped)."""
    from packaging.requirements import Requirement

    names = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                names.append(Requirement(line).name)
    return names


def closure(roots, stop=()):
    """``{canonical name: (name, version)}`` of ``roots`` and their installed run-time dependencies
    (not descending into the canonical names in ``stop``, e.g. torch pulled in by another package)."""
    from packaging.requirements import Requirement

    found, stack = {}, list(roots)
    while stack:
        name = stack.pop()
        if canonical(name) in found or canonical(name) in stop:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"error: {name} (needed by requirements.txt) is not installed in {sys.executable}")
        found[canonical(name)] = (dist.metadata["Name"], dist.version)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return found


def lock_lines(requirements):
    """Header and sorted ``name==version`` lines for the lock file."""
    names = requirement_names(requirements)
    ours = [n for n in names if canonical(n) not in TORCH_ROOTS]
    pins = closure(ours, stop=TORCH_ROOTS)
    torch_only = set(closure([n for n in names if canonical(n) in TORCH_ROOTS])) - set(pins)
    for key in torch_only:
        pins.pop(key, None)
    py = ".".join(platform.python_version_tuple()[:2])
    header = [
        "# Versions CI tested: written by `python tools/freeze_requirements.py` (do not edit by hand).",
        "# Used as constraints by scripts/install.sh: pip install -c requirements-lock.txt -r requirements.txt",
        "# torch/torchvision and the packages only they need are not pinned (install.sh keeps an existing torch).",
        f"# python {py}",
    ]
    return header + [f"{n}=={v}" for _, (n, v) in sorted(pins.items())]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Pin the installed versions of requirements.txt's "
                                                 "dependency closure into requirements-lock.txt.")
    parser.add_argument("--requirements", default=os.path.join(REPO_ROOT, "requirements.txt"),
                        help="requirements file to resolve (default: the repo's requirements.txt)")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "requirements-lock.txt"),
                        help="lock file to write (default: the repo's requirements-lock.txt)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the lock file differs from this environment")
    args = parser.parse_args(argv)
    text = "\n".join(lock_lines(args.requirements)) + "\n"
    if args.check:
        try:
            with open(args.output, "r", encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            print(f"{args.output} differs from the installed versions; run python tools/freeze_requirements.py")
            return 1
        print(f"{args.output} matches the installed versions")
        return 0
    sys.path.insert(0, REPO_ROOT)
    from engine.utils.io import atomic_write_text

    atomic_write_text(args.output, text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
