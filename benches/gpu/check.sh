#!/usr/bin/env bash
# GPU check (on a machine with an NVIDIA GPU and PyTorch): ktrack built with `--features tch`
# against that machine's torch version, side by side with PyTorch eager.
#   benches/gpu/check.sh path/to/ktrack [out-dir]
# 1. `ktrack bench train` ResNet-50, 224 px, batch 64 on cuda:0 (and tch-cpu for scale);
# 2. the same model and batch in PyTorch eager (benches/eager_train.py, run by `bench train --eager`);
# 3. one real fine-tune epoch through `ktrack run` (synthetic 224 px cohort → store → loader →
#    burn on LibTorch CUDA → predictions), which prints the epoch's images/s;
# 4. one epoch each of SimCLR and CLIP pretraining (resnet50-pretrain.toml), with images/s;
# also `bench train --precision bf16` beside PyTorch's bf16 autocast, and `bench loader`.
set -euo pipefail
KTRACK=$(realpath "$1"); OUT=${2:-$(mktemp -d)}; mkdir -p "$OUT"
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
TORCH=$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
export LD_LIBRARY_PATH=$TORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export KTRACK_HOME=${KTRACK_HOME:-$(mktemp -d)}
DEVICE=${DEVICE:-cuda:0}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' | tee -a "$OUT/gpu.txt"

echo "== ktrack bench train (burn on LibTorch CUDA, native conv/BatchNorm/ReLU), beside PyTorch eager in the same run"
"$KTRACK" --no-progress bench train --arch resnet50 --size 224 --batch 64 --steps 20 \
  --devices "$DEVICE" --threads "${THREADS:-8}" --eager "$PY" --format json | tee "$OUT/ktrack-bench.json"
echo "== the same with precision bf16, beside PyTorch's bf16 autocast (channels-last) in the same run"
"$KTRACK" --no-progress bench train --arch resnet50 --size 224 --batch 64 --steps 20 \
  --devices "$DEVICE" --threads "${THREADS:-8}" --eager "$PY" --precision bf16 --format json | tee "$OUT/ktrack-bench-bf16.json"
echo "== the loader at 1024² → 224 px, per core, and peak RSS at two cohort sizes"
"$KTRACK" --no-progress bench loader --threads 1 | tee "$OUT/loader.txt"
echo "== one fine-tune epoch through ktrack run"
"$KTRACK" init >/dev/null
"$KTRACK" --no-progress run "$HERE/resnet50-epoch.toml" --device "$DEVICE" 2>&1 | tee "$OUT/epoch.log"
echo "== self-supervised pretraining, one epoch each (SimCLR, CLIP), ResNet-50 at 224 px"
"$KTRACK" --no-progress run "$HERE/resnet50-pretrain.toml" --device "$DEVICE" 2>&1 | tee "$OUT/pretrain.log"
"$KTRACK" status --format json > "$OUT/status.json" || true
"$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
bench = json.load(open(f"{out}/ktrack-bench.json"))
k, e = bench["ktrack"][0], bench["eager"][0]
print("ResNet-50, 224 px, batch 64, fp32, forward+backward+AdamW (forward alone in brackets):")
print(f"  ktrack (burn-tch, {k['device']}, cudnn benchmark on): {k['images_per_second']:.1f} images/s [{k['forward_images_per_second']:.1f}]")
print(f"  PyTorch {e['torch']} eager ({e['device']}, cudnn benchmark on): {e['images_per_second']:.1f} images/s [{e['forward_images_per_second']:.1f}]")
print(f"  ratio ktrack / eager: {k['vs_eager']:.2f}")
bf = json.load(open(f"{out}/ktrack-bench-bf16.json"))
k, e = bf["ktrack"][0], bf["eager"][0]
print(f"  bf16: ktrack {k['images_per_second']:.1f} images/s, PyTorch bf16 autocast {e['images_per_second']:.1f}; ratio {k['vs_eager']:.2f}")
PYEOF
