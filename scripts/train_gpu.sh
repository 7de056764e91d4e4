#!/usr/bin/env bash
# The whole lent-GPU training run of problems 1 and 2, in the calls a `device` lease allows
# (each call: at most 10 minutes and 64 MiB of working tree; the machine goes back after 30 s idle).
#
#   here:     bash scripts/train_gpu.sh pack              # carry/faces (~48 MB), carry/digits (~24 MB)
#   call 1:   bash scripts/train_gpu.sh start faces       # carry: carry/faces  -> p1 A and B, detached
#   call 2:   bash scripts/train_gpu.sh start digits      # carry: carry/digits -> p2 diffusion x2, ACGAN, SAGAN
#   call 3:   bash scripts/train_gpu.sh collect "$OUT"    # waits for the deadline, bundles weights + logs
#             (at most 62 MiB; what is left out is named, with the `gpu_pack.py bundle --skip N` call
#             that brings it back in a 4th call while the machine is still warm)
#   here:     python scripts/gpu_pack.py bundle-extract <files_at> runs/gpu   # then evaluate and ship
#
# Every job runs `setsid nohup` with its own log and stops by SIGTERM at one shared deadline
# (runs/gpu/end_at, set by the first `start`: now + GPU_TRAIN_SECONDS, default 480), which saves its
# last.pt and model.pt as on the CPU. `status` prints the logs' tails and nvidia-smi.
# GPU_TINY=1 runs the same jobs with tiny settings (the test runs it on the CPU); GPU_RUNS, GPU_DATA,
# GPU_CARRY and GPU_PACK_LIMIT move its folders / shrink the packs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
runs=${GPU_RUNS:-runs/gpu}
data=${GPU_DATA:-hw2_data_gpu}
carry=${GPU_CARRY:-carry}
limit_arg=${GPU_PACK_LIMIT:+--limit $GPU_PACK_LIMIT}
mkdir -p "$runs"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

if [ "${GPU_TINY:-0}" = 1 ]; then
    steps=4; snap=2; p1x="--limit 64 --batch-size 16 --ngf 8 --ndf 8"; p2x="--max-images 256 --batch-size 32 --sample-every 0"
    diffx="--base-channels 8 --eval-every 0"; ganx="--g-channels 8 --d-channels 8 --eval-every 0"; small="--base-channels 8"
else
    steps=1000000; snap=${GPU_SNAPSHOT_EVERY:-3000}; p1x="--sample-every 2000"; p2x="--sample-every 4000"
    diffx="--eval-every 4000"; ganx="--eval-every 2000"; small="--base-channels 16 --num-res-blocks 2"
fi

launch() {  # launch NAME CMD...: detached, own log, pid recorded
    local name=$1; shift
    setsid nohup "$@" >"$runs/$name.log" 2>&1 </dev/null &
    echo "$! $name" >>"$runs/pids"
    echo "launched $name (pid $!)"
}

watchdog() {  # SIGTERM every job once the deadline in $runs/end_at has passed (re-read, so it can move)
    if [ -f "$runs/watchdog.pid" ] && kill -0 "$(cat "$runs/watchdog.pid")" 2>/dev/null; then return; fi
    setsid nohup bash -c '
        runs=$1
        while :; do
            if [ "$(date +%s)" -ge "$(cat "$runs/end_at")" ]; then
                while read -r pid name; do kill -TERM "$pid" 2>/dev/null || true; done <"$runs/pids"
                exit 0
            fi
            sleep 2
        done' _ "$runs" >"$runs/watchdog.log" 2>&1 </dev/null &
    echo $! >"$runs/watchdog.pid"
}

alive() { local n=0; while read -r pid name; do kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done <"$runs/pids"; echo $n; }

cmd=${1:-}
case "$cmd" in
pack)
    "$py" scripts/gpu_pack.py pack faces --data "${2:-hw2_data}" --out "$carry/faces" $limit_arg
    "$py" scripts/gpu_pack.py pack digits --data "${2:-hw2_data}" --out "$carry/digits" $limit_arg \
        --classifier "${HW2_CLASSIFIER:-../shared/evaluators/Classifier.pth}"
    ;;
start)
    kind=${2:?usage: train_gpu.sh start faces|digits}
    [ -f "$runs/end_at" ] || echo $(( $(date +%s) + ${GPU_TRAIN_SECONDS:-480} )) >"$runs/end_at"
    touch "$runs/pids"
    "$py" scripts/gpu_pack.py unpack "$carry/$kind" --data "$data"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
    if [ "$kind" = faces ]; then
        for m in A B; do
            launch "p1_$m" "$py" -m p1_gan.train --method "$m" --data "$data/face" --run-dir "$runs/p1_$m" \
                --cache-dir "$runs/cache" --eval-every 0 --max-steps "$steps" --snapshot-every "$snap" --no-progress $p1x
        done
    elif [ "$kind" = digits ]; then
        export HW2_CLASSIFIER=$(cd "$carry/digits" && pwd)/Classifier.pth
        [ "${GPU_TINY:-0}" = 1 ] && unset HW2_CLASSIFIER
        launch p2_diffusion "$py" -m p2_diffusion_acgan.train --model diffusion --run "$runs/p2_diffusion" \
            --data-root "$data" --max-steps "$steps" $p2x $diffx
        launch p2_diffusion_small "$py" -m p2_diffusion_acgan.train --model diffusion --run "$runs/p2_diffusion_small" \
            --data-root "$data" --max-steps "$steps" $p2x $diffx $small
        for m in acgan sagan; do
            launch "p2_$m" "$py" -m p2_diffusion_acgan.train --model "$m" --run "$runs/p2_$m" \
                --data-root "$data" --max-steps "$steps" $p2x $ganx
        done
    else
        echo "unknown kind $kind (faces or digits)" >&2; exit 2
    fi
    watchdog
    echo "deadline in $(( $(cat "$runs/end_at") - $(date +%s) )) s; $(alive) jobs alive"
    ;;
status)
    for f in "$runs"/*.log; do echo "== $f"; tail -c 600 "$f"; echo; done
    command -v nvidia-smi >/dev/null && nvidia-smi || true
    echo "deadline in $(( $(cat "$runs/end_at") - $(date +%s) )) s; $(alive) jobs alive"
    ;;
collect)
    out=${2:?usage: train_gpu.sh collect OUT_DIR}
    limit=$(( $(cat "$runs/end_at") + ${GPU_GRACE_SECONDS:-60} ))
    while [ "$(alive)" -gt 0 ] && [ "$(date +%s)" -lt "$limit" ]; do sleep 3; done
    while read -r pid name; do kill -KILL "$pid" 2>/dev/null && echo "killed $name (did not stop in time)"; done <"$runs/pids" || true
    for f in "$runs"/*.log; do echo "== $f"; tail -c 400 "$f"; echo; done
    "$py" scripts/gpu_pack.py bundle "$runs" "$out"
    ;;
*)
    sed -n '2,16p' "$0"; exit 2
    ;;
esac
