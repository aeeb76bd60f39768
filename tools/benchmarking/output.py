"""What the tool writes: the environment (machine, software, code commit), the ``--json`` file
``{environment, opts, rows}`` (atomic) and the console tables, one per phase."""
import os
import platform
import subprocess
import time


def git_state(root):
    """``(commit, dirty)`` of the checkout at ``root``; ``(None, None)`` without git."""
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", root, "status", "--porcelain"], capture_output=True, text=True,
                                timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


def environment(args, code_root, phases, isolate):
    """Machine, software and run description stored next to the rows."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    commit, dirty = git_state(code_root)
    use_gpu = torch.cuda.is_available() and args.device != "cpu"
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if use_gpu else None,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "code_root": code_root, "code_commit": commit, "code_dirty": dirty, "label": args.label,
            "device": args.device, "phases": list(phases), "isolate": isolate, "classes": args.classes,
            "classnames": args.classnames or "class i", "steps": args.steps, "warmup": args.warmup,
            "eval_batches": args.eval_batches, "test_size": args.test_size}


def with_code_state(rows, code_root):
    """Rows with ``code_root``/``code_commit``/``code_dirty`` (a child's row keeps what it imported)."""
    commit, dirty = git_state(code_root)
    for row in rows:
        for key, value in (("code_root", code_root), ("code_commit", commit), ("code_dirty", dirty)):
            row.setdefault(key, value)
    return rows


def write_json(args, opts, code_root, phases, isolate, rows, complete):
    """``--json``: ``{environment, opts, rows}`` written atomically; ``environment.complete`` False while running."""
    if not args.json:
        return
    from engine.utils.io import atomic_write_json

    env = environment(args, code_root, phases, isolate)
    env["complete"] = complete
    atomic_write_json(args.json, {"environment": env, "opts": list(opts), "rows": with_code_state(rows, code_root)})


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def text_cell(row, prefix):
    rows, length = row.get(f"{prefix}_text_rows"), row.get(f"{prefix}_text_len")
    if rows is None:
        return "-"
    mark = "*" if row.get("text_len_source") == "inferred" else ""
    return f"{rows:,} x {length}{mark} = {row[f'{prefix}_text_tokens']:,}"


def format_tables(rows, phases):
    """One ``tabulate`` pipe table per phase (``-`` where a value does not apply; ``*`` = inferred length)."""
    from tabulate import tabulate

    labelled = any(r.get("label") for r in rows)
    head = ["method"] + (["label"] if labelled else []) + ["prec"]
    tables = []

    def lead(r):
        return [r.get("variant", r.get("method"))] + ([r.get("label", "")] if labelled else []) + [fmt(r.get("prec"))]

    def failed(r, phase):
        errors = r.get("errors") or {}
        return next((v for k, v in errors.items() if phase in k.split("+")), None)

    if "train" in phases:
        body = []
        for r in rows:
            err = failed(r, "train")
            trained = r.get("train_step_ms_mean") is not None
            body.append(lead(r) + ([f"failed: {err}"] + [""] * 7 if err else [
                fmt(r.get("batch")) if trained else "-", fmt(r.get("trainable")), fmt(r.get("build_s"), 2),
                fmt(r.get("train_step_ms_mean")), fmt(r.get("train_step_ms_p50")), text_cell(r, "train"),
                fmt(r.get("train_peak_mem_mib"), 0), fmt(r.get("train_mem_base_mib"), 0)]))
        tables.append(tabulate(body, headers=head + [
            "batch", "trainable params", "build (s)", "train step mean (ms)", "train step p50 (ms)",
            "text rows x len = tokens", "train peak mem (MiB)", "mem at start (MiB)"],
            tablefmt="pipe", disable_numparse=True))
    if "eval" in phases:
        body = []
        for r in rows:
            err = failed(r, "eval")
            body.append(lead(r) + ([f"failed: {err}"] + [""] * 7 if err else [
                fmt(r.get("eval_batch")), fmt(r.get("eval_text_s"), 2), fmt(r.get("eval_img_s")),
                text_cell(r, "eval") + (" /batch" if r.get("eval_text_scope") == "per_batch" else ""),
                fmt(r.get("eval_set_s")), fmt(r.get("eval_set_recompute_s")),
                fmt(r.get("eval_peak_mem_mib"), 0), fmt(r.get("eval_mem_base_mib"), 0)]))
        n = next((r["test_size"] for r in rows if r.get("test_size")), "N")
        tables.append(tabulate(body, headers=head + [
            "eval batch", "text once (s)", "eval (img/s)", "text rows x len = tokens", f"{n} images (s)",
            f"{n} images, text per batch (s)", "eval peak mem (MiB)", "mem at start (MiB)"],
            tablefmt="pipe", disable_numparse=True))
    if any(r.get("text_len_source") == "inferred" for r in rows):
        tables.append("* length inferred from the input shape (code without PromptedTextEncoder.last_shape): "
                      "every context position")
    return "\n\n".join(tables)
