#!/usr/bin/env bash
# One GPU check for a lent H100/H200: everything it measures goes under $OUT.
#
#   pip install -e '.[train]'                # a plain checkout, the train extra only
#   OUT=/some/dir benchmarks/gpu_check.sh    # about 5-7 minutes on one H100/H200
#   benchmarks/gpu_check.sh --dry-run        # no GPU: runs every step that needs no CUDA
#                                            # (telemetry against the stand-ins, gloo, the
#                                            # data pipeline) and prints the GPU steps
#   benchmarks/gpu_check.sh --dry-run --rehearse   # also the GPU steps on the CPU, tiny
#
# Steps (each writes $OUT/<step>.log; the run stops at the first failure, loudly, with the
# step's name and log; nothing is skipped): versions (python, torch, CUDA, cuDNN, NCCL,
# driver); nvml (NVML vs nvidia-smi and the sampler's CPU per sample); captures (idle and
# load nvidia-smi captures in the tests/fixtures/nvidia-smi format, under $OUT/captures);
# bench-train and bench-train-compile (seglab bench train on the seed recipe: config vs the
# fp32/NCHW/eager baseline, img/s and peak memory); amp-bf16 and amp-fp16 (300 iterations
# on synthetic Cityscapes-sized data: loss finite and falling); export (TorchScript and
# ONNX parity against eager on the GPU); nccl (one-rank init and all-reduce); data (the
# data pipeline's img/s per core vs torchvision's reference, and the loader on all cores).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DRY_RUN=0
REHEARSE=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        --rehearse) REHEARSE=1 ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $arg (use --dry-run, --rehearse)" >&2; exit 2 ;;
    esac
done
if [ "$DRY_RUN" = 0 ] && [ -z "${OUT:-}" ]; then
    echo "gpu_check.sh: set OUT to the folder the results go to" >&2
    exit 2
fi
OUT=${OUT:-$(mktemp -d -t seglab-gpu-check-XXXXXX)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
CORES=$("$PY" -c 'import os; print(len(os.sched_getaffinity(0)))')
SEED=recipes/cityscapes-deeplabv3plus-r50.yaml
START=$(date +%s)
GPU_STEPS=()

# CPU rehearsals of GPU steps (--dry-run --rehearse): the same code at a tiny size.
declare -A REHEARSAL=(
    [nvml]="$PY benchmarks/gpu_check.py nvml --cpu"
    [captures]="$PY benchmarks/gpu_check.py capture $OUT/captures-rehearsal --cpu"
    [bench-train]="$PY -m seglab bench train $SEED --crop 64 128 --batch 2 --steps 1 --warmup 0"
    [amp-bf16]="$PY benchmarks/gpu_check.py amp bf16 --iters 2 --cpu"
    [amp-fp16]="$PY benchmarks/gpu_check.py amp fp16 --iters 1 --cpu"
    [export]="$PY benchmarks/gpu_check.py export --cpu"
    [nccl]="$PY benchmarks/gpu_check.py nccl --cpu"
)

# step NAME GPU|CPU "what it measures" COMMAND...
step() {
    local name=$1 needs=$2 what=$3
    shift 3
    if [ "$DRY_RUN" = 1 ] && [ "$needs" = GPU ]; then
        GPU_STEPS+=("$name")
        printf '\n==> %s [GPU step, not run: --dry-run]\n    measures: %s\n    command:  %s\n' \
            "$name" "$what" "$*"
        if [ "$REHEARSE" = 0 ]; then
            return 0
        fi
        if [ -z "${REHEARSAL[$name]:-}" ]; then
            printf '    no CPU rehearsal (needs the driver, or too slow on a CPU)\n'
            return 0
        fi
        # shellcheck disable=SC2206  # the rehearsal strings are word lists by design
        set -- ${REHEARSAL[$name]}
        printf '    rehearsing on the CPU at a tiny size\n'
    fi
    printf '\n==> %s (%ss)\n    measures: %s\n    $ %s\n' "$name" "$(($(date +%s) - START))" \
        "$what" "$*"
    if ! "$@" >"$OUT/$name.log" 2>&1; then
        echo "---- $name FAILED; the end of $OUT/$name.log:" >&2
        tail -n 40 "$OUT/$name.log" >&2
        echo "gpu_check.sh: step $name failed" >&2
        exit 1
    fi
    tail -n 25 "$OUT/$name.log"
}

if [ "$DRY_RUN" = 1 ]; then
    step versions CPU "python, torch, torchvision, numpy, pillow, pyspng; CUDA build" \
        "$PY" benchmarks/gpu_check.py versions
    step nvml-standin CPU "NVML (replayed H200 capture) vs the stand-in nvidia-smi" \
        "$PY" benchmarks/gpu_check.py nvml --cpu
    step captures-standin CPU "the capture writer on the stand-in nvidia-smi, re-parsed" \
        "$PY" benchmarks/gpu_check.py capture "$OUT/captures-standin" --cpu
    step nccl-gloo CPU "one-rank gloo init + all_reduce (the NCCL step's code path)" \
        "$PY" benchmarks/gpu_check.py nccl --cpu
    step data CPU "data pipeline img/s per core vs torchvision reference; loader" \
        "$PY" -m seglab bench data --workers "$CORES" --images 2 --samples 4
fi

step driver GPU "driver, CUDA, cuDNN, NCCL, GPU names as torch and nvidia-smi see them" \
    bash -c "nvidia-smi --version && nvidia-smi -L && $PY benchmarks/gpu_check.py versions"
step nvml GPU "NVML vs nvidia-smi (uuid, name, memory, power limit, temperature); us per sample" \
    "$PY" benchmarks/gpu_check.py nvml
step captures GPU "idle and load nvidia-smi captures in the fixture format -> \$OUT/captures" \
    "$PY" benchmarks/gpu_check.py capture "$OUT/captures"
step bench-train GPU "seed recipe, config (bf16, channels_last) vs fp32/NCHW/eager: img/s, memory" \
    "$PY" -m seglab bench train "$SEED" --steps 30 --warmup 5 --no-compile --json
step bench-train-compile GPU "the same with torch.compile on the configured run" \
    "$PY" -m seglab bench train "$SEED" --steps 30 --warmup 10 --compile --json
step amp-bf16 GPU "300 iterations bf16 autocast, synthetic 1024x2048 -> 512x1024: loss falls" \
    "$PY" benchmarks/gpu_check.py amp bf16 --iters 300
step amp-fp16 GPU "300 iterations fp16 autocast + GradScaler: loss finite and falling" \
    "$PY" benchmarks/gpu_check.py amp fp16 --iters 300
step export GPU "TorchScript and ONNX outputs vs eager on the GPU (max abs difference)" \
    "$PY" benchmarks/gpu_check.py export
step nccl GPU "one-rank NCCL process group: init + all_reduce on the GPU" \
    "$PY" benchmarks/gpu_check.py nccl
if [ "$DRY_RUN" = 0 ]; then
    step data CPU "data pipeline img/s per core vs torchvision reference; loader on all cores" \
        "$PY" -m seglab bench data --workers "$CORES" --samples 24
fi

if [ "$DRY_RUN" = 1 ]; then
    printf '\ndry run done in %ss; GPU steps a GPU machine runs: %s\nlogs in %s\n' \
        "$(($(date +%s) - START))" "${GPU_STEPS[*]}" "$OUT"
else
    printf '\nGPU check done in %ss; results in %s\n' "$(($(date +%s) - START))" "$OUT"
fi
