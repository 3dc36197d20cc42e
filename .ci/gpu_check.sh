#!/usr/bin/env bash
# GPU check, run by hand on a lent CUDA machine (not by CI, which has no GPU). That machine's image has torch,
# transformers, peft, pytest and pytest-xdist but no network: the few pure-Python dependencies it lacks travel
# as wheels in .whl/ (see docs/DEVELOPERS.md, "GPU check"). Then:
#   1. the CUDA tests and the trainer / reward-model / workflow tests, which put everything on the GPU there;
#   2. benchmarks/grpo_step.py on a SmolLM2-135M-shaped model with random weights (config + tokenizer from .gpu/smol:
#      the converted GGUF is too large to carry; the step's work is fixed by min_new_tokens, not by the weights).
# Env: TESTS (pytest paths), TEST_TIMEOUT (s), BENCH=0 to skip the benchmark, BENCH_RUNS (benchmark argument sets,
# separated by ';'). Logs go to $OUT.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name())"
python3 -c "from rlvr.models.tiny import default_model_dir; default_model_dir()"   # built once, before the workers
TESTS=${TESTS:-tests/gpu tests/trainers tests/rlvr tests/reward_models tests/workflow tests/test_r1_mini.py}
timeout "${TEST_TIMEOUT:-330}" python3 -m pytest -q -p no:cacheprovider -n 8 --timeout=280 -rfEs $TESTS \
    > "$OUT/tests.log" 2>&1
echo "pytest exit: $?"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -40
if [ "${BENCH:-1}" = 1 ]; then
    python3 - <<'EOF'
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
import torch
torch.manual_seed(0)
cfg = AutoConfig.from_pretrained(".gpu/smol")
model = AutoModelForCausalLM.from_config(cfg)
model.save_pretrained("/tmp/smol")
AutoTokenizer.from_pretrained(".gpu/smol").save_pretrained("/tmp/smol")
print("random-weight SmolLM2-135M:", sum(p.numel() for p in model.parameters()) / 1e6, "M params")
EOF
    IFS=';' read -ra runs <<< "${BENCH_RUNS:---steps 3 --compare --attn sdpa}"
    for i in "${!runs[@]}"; do
        # shellcheck disable=SC2086  # each run's arguments are split on purpose
        timeout 170 python3 benchmarks/grpo_step.py --model /tmp/smol ${runs[$i]} > "$OUT/grpo_step$i.log" 2>&1
        echo "grpo_step ${runs[$i]}: exit $?"
        tail -24 "$OUT/grpo_step$i.log"
    done
fi
