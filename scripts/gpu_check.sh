#!/usr/bin/env bash
# GPU check in under 10 minutes on one GPU: (a) the CUDA tests (every declared trainer in fp16, bf16 and
# amp on the tiny backbone, tests/test_device_cuda.py), (a2) the precision suite on CUDA (every declared
# trainer in fp32, fp16, bf16 and amp: train, evaluate, reload, logits vs fp32;
# tests/test_methods_every_precision.py -k cuda), (b) tools/benchmark.py: CoMMA and MaPLe in fp16 at
# the first class count, then every method at 100 and 1,000 classes (ImageNet class names) in the
# configs' precision and in amp, then (c) the rest of the test suite with -x if time is left. Every step has its own timeout and a failing step does not stop the
# others. Writes ONE JSON file: $OUT/gpu_check.json when OUT is set, else output/gpu_check.json.
#
# Usage:
#   bash scripts/gpu_check.sh                     # on the GPU machine
#   bash scripts/gpu_check.sh --prepare-wheels    # on a machine with PyPI: the packages the GPU image
#                                                 # lacks (openai-clip, yacs, ftfy, ...) into .whl/
#   GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh   # CPU smoke run of the script (tiny backbone)
#
# Environment (all optional):
#   CLASSNAMES           class-name file (default .whl/classnames_clip.txt, then
#                        ../shared/data/imagenet/classnames_clip.txt; none -> "class i" names, warned)
#   GPU_CHECK_BUDGET_S   seconds for the whole script (default 540); each step gets what is left
#   GPU_CHECK_CLASSES    class counts (default "100 1000"; cpu: "5")
#   GPU_CHECK_PRECS      "config" (each config's PREC) and/or fp32 fp16 bf16 amp (default "config amp")
#   GPU_CHECK_METHODS    benchmark method specs (default: the seven of the COMMA paper's comparison, plus CoMMA:TRAINER.COMMA.KD_TOKENS=real
#                        when the config has that key)
#   GPU_CHECK_FP16_METHODS  method specs of the fp16 benchmark (default: CoMMA MaPLe, plus CoMMA with
#                        KD_TOKENS real when the config has that key; "none" skips the step)
#   GPU_CHECK_BEFORE     a checkout of an earlier commit: also benchmarked (--code-root, label "before",
#                        configs' precision only)
#   GPU_CHECK_SUITE      1 = run the rest of the suite at the end (default 1 on cuda, 0 on cpu)
#   GPU_CHECK_BACKBONE   benchmark backbone (default ViT-B/16; cpu: ViT-Tiny/16)
#   GPU_CHECK_STEPS      timed training steps per benchmark (default 10; cpu: 1)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
WHEELS=.whl

if [ "${1:-}" = "--prepare-wheels" ]; then
    set -e
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" yacs ftfy wcwidth "setuptools>=70.1,<81"
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" openai-clip==1.0.1
    shared=../shared/data/imagenet/classnames_clip.txt
    if [ -f "$shared" ]; then cp "$shared" "$WHEELS/classnames_clip.txt"; fi
    ls -l "$WHEELS"
    echo "carry $WHEELS to the GPU machine (it is git-ignored; never commit it)"
    exit 0
fi

DEVICE="${GPU_CHECK_DEVICE:-cuda}"
BUDGET="${GPU_CHECK_BUDGET_S:-540}"
if [ "$DEVICE" = cpu ]; then
    CLASSES="${GPU_CHECK_CLASSES:-5}"; PRECS="${GPU_CHECK_PRECS:-fp32}"; BACKBONE="${GPU_CHECK_BACKBONE:-ViT-Tiny/16}"
    SUITE="${GPU_CHECK_SUITE:-0}"; STEPS="${GPU_CHECK_STEPS:-1}"; WARMUP=0; EVAL_BATCHES=1
else
    CLASSES="${GPU_CHECK_CLASSES:-100 1000}"; PRECS="${GPU_CHECK_PRECS:-config amp}"; BACKBONE="${GPU_CHECK_BACKBONE:-ViT-B/16}"
    SUITE="${GPU_CHECK_SUITE:-1}"; STEPS="${GPU_CHECK_STEPS:-10}"; WARMUP=3; EVAL_BATCHES=2
fi
BENCH_OPTS=()
if [ "$BACKBONE" = ViT-Tiny/16 ]; then  # the 3-block test architecture: 32x32 images, prompt depths <= 3
    BENCH_OPTS=(INPUT.SIZE "(32, 32)" TRAINER.COMMA.PROMPT_DEPTH 3 TRAINER.MAPLE.PROMPT_DEPTH 3
                TRAINER.IVLP.PROMPT_DEPTH_TEXT 3 TRAINER.IVLP.PROMPT_DEPTH_VISION 3 TRAINER.VPT.PROMPT_DEPTH_VISION 1)
fi
JSON_OUT="${OUT:+$OUT/gpu_check.json}"
JSON_OUT="${JSON_OUT:-output/gpu_check.json}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
NOTES="$WORK/notes.txt"
STEPS_TSV="$WORK/steps.tsv"
: >"$NOTES"; : >"$STEPS_TSV"
note() { echo "[gpu_check] $*" >&2; echo "$*" >>"$NOTES"; }
left() { echo $((BUDGET - SECONDS)); }

# step NAME CAP_S CMD...: runs CMD with timeout min(CAP_S, time left - 20 s); records rc and seconds.
step() {
    local name="$1" cap="$2"; shift 2
    local limit=$(( $(left) - 20 ))
    [ "$limit" -gt "$cap" ] && limit="$cap"
    if [ "$limit" -lt 10 ]; then
        note "step $name skipped: no time left"
        printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 "$limit" >>"$STEPS_TSV"
        return 0
    fi
    echo "[gpu_check] step $name (timeout ${limit}s): $*" >&2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >>"$STEPS_TSV"
    tail -n 15 "$WORK/$name.log" >&2
    [ "$rc" -eq 124 ] && note "step $name timed out after ${limit}s"
    return 0
}

# -- dependencies the GPU image may lack, from carried wheels
if ! "$PY" -c "import clip, yacs, tabulate" >/dev/null 2>&1; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        site="$WORK/site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHEELS"/*.whl \
            && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$PY" -c "import clip, yacs, tabulate" >/dev/null 2>&1 \
        || note "missing packages (clip/yacs/tabulate): run 'bash scripts/gpu_check.sh --prepare-wheels' here and carry $WHEELS"
fi

# -- class names
if [ -z "${CLASSNAMES:-}" ]; then
    for candidate in "$WHEELS/classnames_clip.txt" ../shared/data/imagenet/classnames_clip.txt; do
        if [ -f "$candidate" ]; then CLASSNAMES="$candidate"; break; fi
    done
fi
NAMES_ARGS=()
if [ -n "${CLASSNAMES:-}" ] && [ -f "$CLASSNAMES" ]; then
    NAMES_ARGS=(--classnames "$CLASSNAMES")
else
    note "WARNING: no class-name file (CLASSNAMES=${CLASSNAMES:-unset}): benchmarks use 'class i' names, prompt lengths are not real"
    CLASSNAMES=""
fi

# -- methods: the seven, plus COMMA with KD_TOKENS real when this code has the key
if [ -n "${GPU_CHECK_METHODS:-}" ]; then
    read -r -a METHODS <<<"$GPU_CHECK_METHODS"
else
    METHODS=(CoMMA MaPLe CoOp CoCoOp IVLP VPT ZeroshotCLIP)
    if "$PY" -c "from engine.config import get_cfg_default; from trainers.config import extend_cfg
c = get_cfg_default(); extend_cfg(c); c.TRAINER.COMMA.KD_TOKENS" >/dev/null 2>&1; then
        METHODS+=("CoMMA:TRAINER.COMMA.KD_TOKENS=real")
    fi
fi

if [ -n "${GPU_CHECK_FP16_METHODS:-}" ]; then
    read -r -a FP16_METHODS <<<"$GPU_CHECK_FP16_METHODS"
    [ "$GPU_CHECK_FP16_METHODS" = none ] && FP16_METHODS=()
else
    FP16_METHODS=(CoMMA MaPLe)
    for m in "${METHODS[@]}"; do [[ "$m" == CoMMA:* ]] && FP16_METHODS+=("$m"); done
fi

BEFORE_METHODS=()  # variants with opts may name keys the earlier code lacks
for m in "${METHODS[@]}"; do [[ "$m" == *:* ]] || BEFORE_METHODS+=("$m"); done

# -- (a) CUDA tests, (a2) every declared trainer in every precision on CUDA (both skip without CUDA)
step cuda_tests 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_device_cuda.py --junitxml="$WORK/cuda_tests.xml"
step precision_tests 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_methods_every_precision.py -k cuda \
    --junitxml="$WORK/precision_tests.xml"

# -- (b) benchmarks
bench() {  # bench NAME CLASSES PREC [extra flags...]
    local name="$1" classes="$2" prec="$3"; shift 3
    local prec_args=()
    [ "$prec" != config ] && prec_args=(--prec "$prec")
    step "$name" 200 "$PY" tools/benchmark.py --device "$DEVICE" --backbone "$BACKBONE" --classes "$classes" \
        "${NAMES_ARGS[@]}" --steps "$STEPS" --warmup "$WARMUP" --eval-batches "$EVAL_BATCHES" --isolate off \
        "${prec_args[@]}" "$@" --json "$WORK/$name.json" -- "${BENCH_OPTS[@]}"
}
read -r FIRST_CLASSES _ <<<"$CLASSES"
if [ "${#FP16_METHODS[@]}" -gt 0 ]; then  # the official precision of CoMMA and MaPLe, explicitly
    bench "bench_c${FIRST_CLASSES}_fp16" "$FIRST_CLASSES" fp16 --methods "${FP16_METHODS[@]}" --label after
fi
for classes in $CLASSES; do
    for prec in $PRECS; do
        bench "bench_c${classes}_${prec}" "$classes" "$prec" --methods "${METHODS[@]}" --label after
    done
    if [ -n "${GPU_CHECK_BEFORE:-}" ]; then
        bench "bench_c${classes}_config_before" "$classes" config --methods "${BEFORE_METHODS[@]}" \
            --code-root "$GPU_CHECK_BEFORE" --label before
    fi
done

# -- (c) the rest of the suite
if [ "$SUITE" = 1 ]; then
    step suite 600 "$PY" -m pytest -q -x -p no:cacheprovider tests --ignore=tests/test_device_cuda.py -k "not (every_precision and cuda)" \
        --junitxml="$WORK/suite.xml"
fi

# -- one JSON file
mkdir -p "$(dirname "$JSON_OUT")"
"$PY" - "$WORK" "$JSON_OUT" "$DEVICE" "$CLASSNAMES" "$SECONDS" <<'EOF'
import glob, json, os, platform, subprocess, sys, time
import xml.etree.ElementTree as ET

work, out, device, classnames, seconds = sys.argv[1:6]
env = {"python": platform.python_version(), "device": device, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
       "classnames": classnames or "class i", "seconds": int(seconds)}
try:
    import torch
    env.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
               gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None)
except Exception as e:  # the JSON is written whatever broke
    env["torch_error"] = repr(e)
try:
    env["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    env["commit"] = None

steps = []
with open(os.path.join(work, "steps.tsv")) as f:
    for line in f:
        name, rc, secs, limit = line.rstrip("\n").split("\t")
        steps.append({"name": name, "rc": None if rc == "skipped" else int(rc), "skipped": rc == "skipped",
                      "timed_out": rc in ("124", "137"), "seconds": int(secs), "timeout_s": int(limit)})

def junit(path):
    if not os.path.isfile(path):
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    res = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    res["passed"] = res["tests"] - res["failures"] - res["errors"] - res["skipped"]
    res["failed"] = [f'{c.get("classname")}::{c.get("name")}: {(c[0].get("message") or "")[:300]}'
                     for s in suites for c in s.iter("testcase")
                     if len(c) and c[0].tag in ("failure", "error")]
    return res

tests = {name: junit(os.path.join(work, f"{name}.xml")) for name in ("cuda_tests", "precision_tests", "suite")}
benchmarks = []
for path in sorted(glob.glob(os.path.join(work, "bench_*.json"))):
    with open(path) as f:
        data = json.load(f)
    benchmarks.append({"name": os.path.basename(path)[:-5], "environment": data.get("environment"),
                       "opts": data.get("opts"), "rows": data.get("rows")})
with open(os.path.join(work, "notes.txt")) as f:
    notes = [line.strip() for line in f if line.strip()]
logs = {}
for path in sorted(glob.glob(os.path.join(work, "*.log"))):
    with open(path, errors="replace") as f:
        logs[os.path.basename(path)[:-4]] = f.read()[-4000:]
result = {"environment": env, "steps": steps, "tests": tests, "benchmarks": benchmarks, "notes": notes,
          "log_tails": logs}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(result, f, indent=2)
os.replace(tmp, out)
bad = [s["name"] for s in steps if s["rc"] not in (0, None)]
print(f"[gpu_check] wrote {out}: {len(steps)} steps, failed: {bad or 'none'}", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
rc=$?
rm -rf "$WORK"
exit "$rc"
