#!/usr/bin/env bash
# Every GPU figure this project asks for, in one run of under 8 minutes on one GPU, into one file:
#   bash scripts/gpu_check.sh [OUT_FILE]        (default: gpu_check.txt; needs a CUDA device)
# Each check has its own time limit, so one slow check cannot eat the others' time; a check that fails or times out
# is recorded as such and the rest still run. Rehearse it on a CPU with GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1.
set -u
OUT=${1:-gpu_check.txt}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
QUICK=${GPU_CHECK_QUICK:-0}   # 1: tiny settings (a rehearsal of the script, not figures)
PY=${PYTHON:-python}
: > "$OUT"

check() {  # check SECONDS TITLE COMMAND...: run COMMAND with a time limit, its output and wall time into $OUT
    local limit=$1 title=$2
    shift 2
    echo "== $title" | tee -a "$OUT"
    echo "\$ $*" >> "$OUT"
    local start=$SECONDS
    timeout "$limit" "$@" >> "$OUT" 2>&1
    local status=$?
    echo "-- exit $status, $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT"
}

if [ "$QUICK" = 1 ]; then
    MODEL_SET=(data.image_size=64 data.batch_size=2 backbone.allow_stand_in=true)
    STEPS=(--steps 1 --warmup 0)
    MAPS=(--maps 20 --size 64)
else
    MODEL_SET=(backbone.allow_stand_in=true)
    STEPS=(--steps 5 --warmup 2)
    MAPS=()
fi
BENCH=("$PY" -m anomalib_lite benchmark)

check 15 "machine" "$PY" -c "import torch, platform; print(platform.platform(), 'torch', torch.__version__, 'cuda', torch.version.cuda); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
# Issue 25's table: images/s, peak memory and the projected full MVTec AD table of each family at the paper's setting.
MSFI_SET=()
[ "$QUICK" = 1 ] && MSFI_SET=("model.scales=[64]" eval.map_size=64)
for family in hfr msfi utad; do
    extra=()
    [ "$family" = msfi ] && extra=("${MSFI_SET[@]}")
    check 50 "model $family (paper setting)" "${BENCH[@]}" model --model "$family" --device "$DEVICE" "${STEPS[@]}" --set "${MODEL_SET[@]}" "${extra[@]}"
done
check 90 "model igd (the paper's batch 64, micro-batches of 900 patches: the experiment's setting)" "${BENCH[@]}" model --model igd --device "$DEVICE" "${STEPS[@]}" --set "${MODEL_SET[@]}"
check 90 "model igd (batch 16 in one pass: the setting before micro-batches)" "${BENCH[@]}" model --model igd --device "$DEVICE" "${STEPS[@]}" --set "${MODEL_SET[@]}" data.batch_size=16 model.micro_batch=null
# Channels-last and compile on CUDA (MSFI with the Lite0 teacher: the 20x case).
for layout in false true; do
    check 35 "msfi lite0 channels_last=$layout" "${BENCH[@]}" model --model msfi --device "$DEVICE" "${STEPS[@]}" --set "${MODEL_SET[@]}" "${MSFI_SET[@]}" backbone=tf_efficientnet_lite0 "trainer.channels_last=$layout"
done
# The evaluator on every map distribution, exact (checked against scikit-learn) and timed at MVTec AD size.
check 60 "evaluator, every kind" "${BENCH[@]}" evaluator --device "$DEVICE" --kind all --check "${MAPS[@]}"
echo "figures in $OUT"
