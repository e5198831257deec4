#!/usr/bin/env bash
# One short GPU check (at most 8 minutes on one GPU): environment, a correctness check of one
# trainer step against the fp32 reference, then the speed figures at ResNet-50, 224 px, batch 256:
# the trainer step against the fp32 reference (ratio), the data path (decoded once, batched
# augmentation on the GPU), the whole loop, peak GPU memory; then the same with torch.compile.
# Usage (repository root): bash bench/gpu_check.sh
# Uses .venv when built, else the machine's python3 with PYTHONPATH=src (needs torch, torchvision,
# pydantic, pandas, opencv, ffmpeg-python; no DVC).
set -euo pipefail
if [ -x .venv/bin/python ]; then export PATH="$PWD/.venv/bin:$PATH"; else
  # a wrapper, not a link: a linked venv interpreter loses its site-packages
  mkdir -p .gpu/bin && printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" >.gpu/bin/python
  chmod +x .gpu/bin/python && export PATH="$PWD/.gpu/bin:$PATH"
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
PY
echo "== correctness: one step, bf16 trainer vs fp32 reference, same init and batch"
python - <<'PY'
import torch, torch.nn.functional as F
from demystify.ssl.moco import MoCo, encoder
from demystify.ssl.train import Runtime, _moco_step
assert torch.cuda.is_available(), "no CUDA device"
def make():
    torch.manual_seed(0)
    return MoCo(encoder("resnet50", 128, 8), 1024, 0.999, 0.2, 8).cuda()
x, y = torch.randn(64, 3, 224, 224, device="cuda"), torch.randn(64, 3, 224, 224, device="cuda")
g = lambda: torch.Generator().manual_seed(0)
ref = make()
logits, labels = ref(x, y, g())
ref_loss = F.cross_entropy(logits, labels).item()
ours = make().to(memory_format=torch.channels_last)
loss = _moco_step(ours, (x, y), Runtime(device="cuda"), True, g()).item()
print(f"fp32 loss {ref_loss:.4f}  bf16/channels_last loss {loss:.4f}")
assert abs(loss - ref_loss) < 0.05 * abs(ref_loss), "trainer step disagrees with the fp32 reference"
PY
echo "== a 224 px corpus for the loader"
corpus=$(mktemp -d)
python - "$corpus" <<'PY'
import sys
from pathlib import Path
from demystify.core import config
from demystify.world.synthesize import World, write_object_centric
w = config.load("world", path="params.yaml")["world"]
w = w.model_validate({**w.model_dump(), "image_size": 224,
                      "corpora": {**w.corpora.model_dump(), "object_centric_per_category": 60}})
write_object_centric(World(w), Path(sys.argv[1]), progress=False)
PY
echo "== speed"
python bench/pretrain.py --device cuda --arch resnet50 --size 224 --batch 256 --queue 65536 \
  --corpus "$corpus/corpora/object_centric" --steps 20
python bench/pretrain.py --device cuda --arch resnet50 --size 224 --batch 256 --queue 65536 \
  --corpus "$corpus/corpora/object_centric" --steps 20 --compile
