#!/usr/bin/env bash
# One device call on a GPU machine (H100/H200, no internet): install the carried wheels, build gsplat's CUDA
# extension, run the `gpu` tests, benchmarks/gpu.py on this tree (and on a baseline tree, if given), and the
# whole test suite on 8 workers. Everything it measures lands in $OUT (JSON and logs).
#
# Here, before the call (see benchmarks/RESULTS.md, "GPU at paper scale"):
#   wheels the machine's image lacks, into .whl/ (ignored by git), for Python 3.12 manylinux x86-64:
#     gsplat==1.5.3 tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 viser==1.1.1 trimesh==5.2.0
#     msgspec==0.22.0 websockets==16.1.1 zstandard==0.25.0 (17 MB together), and imageio-ffmpeg==0.5.1 as its
#     manylinux2010 wheel (27 MB, it bundles ffmpeg; newer wheels are over the 64 MiB one call carries):
#     pip download imageio-ffmpeg==0.5.1 --platform manylinux2010_x86_64 --only-binary=:all: --no-deps -d .whl
#   optionally a synthetic capture (else benchmarks/gpu.py makes one there, ~1 min):
#     .venv/bin/npga synth --preset full --frames 2 --out data/gpu_capture
#   optionally a baseline tree to compare with (it must have benchmarks/gpu.py's hooks, i.e. this commit or later):
#     mkdir -p data/before && git archive BASE | tar -x -C data/before
# The call: run(command="bash benchmarks/gpu_session.sh", carry=[".whl", "data/gpu_capture", "data/before"],
#               timeout_s=600)
# Stages can be chosen: STAGES="build gpu-tests bench suite" (the default, all of them). All four may pass the
# 10 minutes one call may run (build ~2 min, capture synthesis + benchmark ~4 min, suite up to 6 min): then call
# STAGES="build gpu-tests bench" first and STAGES="build suite" at once after it, on the still-warm machine
# (the gsplat build stays in its ~/.cache/torch_extensions and only loads the second time).
set -uo pipefail
: "${OUT:=benchmarks/out/gpu_session}"
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
STAGES=${STAGES:-"build gpu-tests bench suite"}
has() { [[ " $STAGES " == *" $1 "* ]]; }
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { log "wheel install failed"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/session.log"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/session.log"

if has build; then
    log "building gsplat's CUDA extension"
    start=$(date +%s)
    python3 -c "import torch; from gsplat.cuda._backend import _C; assert _C is not None" 2>&1 | tail -5
    log "gsplat built/loaded in $(( $(date +%s) - start )) s"
fi

if has gpu-tests; then
    log "gpu tests"
    timeout 300 python3 -m pytest -q -m gpu tests/ -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -5
fi

if has bench; then
    capture=()
    [[ -d data/gpu_capture ]] && capture=(--capture "$PWD/data/gpu_capture")
    if [[ -d data/before/npga ]]; then
        log "benchmark: baseline tree data/before"
        (cd data/before && PYTHONPATH="/tmp/site:$PWD" timeout 300 python3 benchmarks/gpu.py \
            --device cuda "${capture[@]}" --out "$OUT/gpu_before.json" 2>&1 | tail -25)
    fi
    log "benchmark: this tree"
    timeout 300 python3 benchmarks/gpu.py --device cuda "${capture[@]}" --out "$OUT/gpu_after.json" 2>&1 | tail -25
fi

if has suite; then
    log "whole suite, 8 workers"
    start=$(date +%s)
    timeout 360 python3 -m pytest -q -n 8 -p no:cacheprovider tests/ 2>&1 | tee "$OUT/suite.log" | tail -15
    log "suite: $(( $(date +%s) - start )) s"
fi
log "done"
