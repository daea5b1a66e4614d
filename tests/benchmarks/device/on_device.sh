#!/usr/bin/env bash
# Runs ON the lent GPU machine, from the repository root (see README.md beside this file):
#   bash tests/benchmarks/device/on_device.sh torch      install the carried wheels, stash the carried
#                                                        onnxruntime part(s), run bench_gpu's torch variants
#   bash tests/benchmarks/device/on_device.sh stash      stash the carried onnxruntime part(s) only
#   bash tests/benchmarks/device/on_device.sh ort        stash, check and unpack onnxruntime-gpu, run the
#                                                        ORT CUDA variants beside the peers
# Files outside $OUT survive between the calls of one lease (/tmp/cxr-kit); a fresh machine has none.
set -uo pipefail
kit=.device
keep="${CXR_KIT_KEEP:-/tmp/cxr-kit}"
site=$keep/site
out="${OUT:-/tmp/cxr-out}"
mkdir -p "$keep/ort" "$site" "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$site:$PWD" TOKENIZERS_PARALLELISM=false

stash() {
    for part in "$kit"/ort/part-*; do
        [ -f "$part" ] && cp "$part" "$keep/ort/" && echo "stashed $(basename "$part") ($(du -m "$part" | cut -f1) MB)"
    done
    [ -f "$kit/ort/SHA256SUMS" ] && cp "$kit/ort/SHA256SUMS" "$keep/ort/"
    echo "parts here: $(cd "$keep/ort" && ls part-* 2>/dev/null | tr '\n' ' ')"
}

install_wheels() {
    if [ -d "$kit/wheels" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "$kit"/wheels/*.whl || exit 1
        cp "$kit/vocab.txt" "$keep/vocab.txt"
    fi
    [ -f "$keep/vocab.txt" ] || { echo "no vocab.txt: carry .device/wheels and .device/vocab.txt" >&2; exit 1; }
}

bench() {  # variants, then the rest of bench_gpu's arguments
    local only=$1
    shift
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$out/gpu.log"
    # CXR_BENCH_*: a rehearsal here on the CPU (README.md) sets them; on the device the defaults hold
    python3 tests/benchmarks/bench_gpu.py --device "${CXR_BENCH_DEVICE:-cuda}" --config "${CXR_BENCH_CONFIGS:-cpu,default}" \
        --steps "${CXR_BENCH_STEPS:-20,50}" --runs "${CXR_BENCH_RUNS:-10}" --vocab "$keep/vocab.txt" --only "$only" "$@" \
        2>&1 | tee -a "$out/gpu.log"
}

case "${1:-}" in
    torch)
        install_wheels
        stash
        bench peer-eager-fp32,peer-eager-fp16,engine-torch-eager,engine-torch-graphs --json "$out/gpu-torch.json"
        ;;
    stash)
        stash
        ;;
    ort)
        install_wheels
        stash
        (cd "$keep/ort" && cat part-* | sha256sum | sed 's/-$/onnxruntime-gpu.tar.xz/' | diff - SHA256SUMS) ||
            { echo "onnxruntime-gpu parts missing or damaged: carry the missing ones (stash) and call again"; exit 1; }
        cat "$keep"/ort/part-* | xz -d -T0 | tar -C "$site" -xf - || exit 1
        python3 -c "import onnxruntime as o; print(o.__file__, o.__version__, o.get_available_providers())"
        bench peer-eager-fp32,peer-eager-fp16,engine-ort-fp32,engine-ort-fp16 --json "$out/gpu-ort.json"
        ;;
    *)
        sed -n '2,8p' "$0" >&2
        exit 2
        ;;
esac
