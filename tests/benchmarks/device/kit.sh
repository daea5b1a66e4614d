#!/usr/bin/env bash
# The lent GPU machine's kit for bench_gpu.py (see README.md beside this file). Runs HERE, with no
# device time spent:
#   bash tests/benchmarks/device/kit.sh prepare   wheels and the split onnxruntime-gpu into .device/
#   bash tests/benchmarks/device/kit.sh aside     move the weights, evaluation records and screenshots
#                                                 (almost all of the tracked bytes) into .device/aside: the tree
#                                                 must travel in 64 MiB with a carried part
#   bash tests/benchmarks/device/kit.sh restore   move them back (always, after the device calls)
#   bash tests/benchmarks/device/kit.sh size      what would travel, in MiB
set -euo pipefail
cd "$(dirname "$0")/../../.."
kit=.device
part_mib=50   # at most: a part + the wheels (7 MiB) + the tree (under 2 MiB once aside) < 64 MiB
ort_version=1.31.1
aside=(resources/models resources/evaluation resources/screenshots)

tree_mib() {  # tracked files present + untracked files git does not ignore, as the device tool counts
    { git ls-files -z; git ls-files -z -o --exclude-standard; } |
        xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {printf "%.1f\n", s / 1048576}'
}

case "${1:-}" in
    prepare)
        mkdir -p "$kit/wheels" "$kit/ort"
        platforms=()
        for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
            platforms+=(--platform "$p")
        done
        # what the device's python 3.12 lacks (its torch, transformers, onnx, tokenizers, safetensors,
        # opencv, numpy are used as they are); pure-Python wheels
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" -d "$kit/wheels" diffusers==0.42.1 importlib_metadata onnxconverter-common
        # onnxruntime-gpu (255 MB): unpacked, xz-compressed (about 195 MiB) and split into parts
        if [ ! -f "$kit/ort/SHA256SUMS" ]; then
            tmp=$(mktemp -d)
            python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
                "${platforms[@]}" -d "$tmp" "onnxruntime-gpu==$ort_version"
            mkdir "$tmp/site"
            python3 -m zipfile -e "$tmp"/onnxruntime_gpu-*.whl "$tmp/site"
            rm -f "$kit"/ort/part-*
            tar -C "$tmp/site" -cf - . | xz -T0 -6 >"$tmp/ort.tar.xz"
            size=$(stat -c %s "$tmp/ort.tar.xz")
            parts=$(( (size + part_mib * 1048576 - 1) / (part_mib * 1048576) ))  # equal parts, fewest calls
            split -n "$parts" -d -a 1 "$tmp/ort.tar.xz" "$kit/ort/part-"
            (cd "$kit/ort" && cat part-* | sha256sum | sed 's/-$/onnxruntime-gpu.tar.xz/' >SHA256SUMS)
            rm -rf "$tmp"
        fi
        cp "$(git rev-parse --show-toplevel)/resources/models/default/vocab.txt" "$kit/vocab.txt"
        ls -l "$kit/wheels" "$kit/ort"
        echo "kit: parts $(ls "$kit"/ort/part-* | wc -l); next: bash $0 aside, then the calls in README.md"
        ;;
    aside)
        for folder in "${aside[@]}"; do
            if [ -d "$folder" ]; then
                mkdir -p "$kit/aside/$(dirname "$folder")"
                mv "$folder" "$kit/aside/$folder"
            fi
        done
        echo "kit: ${aside[*]} are in $kit/aside; the tree is $(tree_mib) MiB (restore afterwards!)"
        ;;
    restore)
        for folder in "${aside[@]}"; do
            if [ -d "$kit/aside/$folder" ]; then
                [ -e "$folder" ] && { echo "kit: $folder exists; not overwriting it" >&2; exit 1; }
                mv "$kit/aside/$folder" "$folder"
            fi
        done
        git status --short resources/ | head
        echo "kit: restored; the tree is $(tree_mib) MiB"
        ;;
    size)
        echo "tree $(tree_mib) MiB; limit 64 MiB for the tree and the carried paths together"
        ;;
    *)
        sed -n '2,9p' "$0" >&2
        exit 2
        ;;
esac
