#!/usr/bin/env bash
# The whole lent-GPU training run of problems 1 and 2, in the calls a `device` lease allows
# (each call: at most 10 minutes and 64 MiB of working tree, the ~43 MB tracked tree included, ~40 MB
# of it weights: session 16 moved checkpoints/p1_*.pt, p2_*.pt out of the tree for its calls, the jobs
# going on from init packs, which left ~60 MiB per call; the machine goes back after 30 s idle).
#
#   here:     bash scripts/train_gpu.sh pack              # carry/faces_0, faces_1 (~24 MB each), carry/digits_0..2
#                                                         # (lossless, ~20 MiB each; FACE_PARTS / DIGIT_PARTS split further)
#   here:     python scripts/gpu_pack.py pack-init runs/gpu_sN --out carry   # the last run's weights to go on
#             from -> carry/init_K (<= 29 MiB each; see "after the run" below); skip on a first run
#   call 0:   bash scripts/train_gpu.sh unpack init_0     # carry: carry/init_0 (one call per init pack,
#             BEFORE any start: the jobs pick their init file up when they are launched)
#   call 1:   bash scripts/train_gpu.sh start digits      # carry: carry/digits_* (earlier calls may unpack
#                                                         # some parts) -> p2 diffusion, ACGAN, SAGAN, detached
#   call 2:   bash scripts/train_gpu.sh unpack faces_0    # carry: carry/faces_0 (decoded into the GPU's data folder)
#   call 3:   bash scripts/train_gpu.sh start faces       # carry: carry/faces_1 -> p1 A, B, B2, detached
#   call 4:   bash scripts/train_gpu.sh collect "$OUT"    # waits for the deadline, bundles weights + logs
#             (at most 62 MiB; what is left out is named, with the `gpu_pack.py bundle --skip N` call
#             that brings it back in a 5th call while the machine is still warm)
#   here:     python scripts/gpu_pack.py bundle-extract <files_at> runs/gpu_sN   # then evaluate and ship
#   after the run: every GAN run's final snapshot keeps D, and pack-init (above) carries it, with the
#             diffusion model.pt, to the next run (runs whose D ended at chance are left out)
#   The calls follow each other with no pause: the machine is held (and counted) from the first call
#   to give_back, idle or not; end_at can be moved back while the jobs run.
#
# Every job runs `setsid nohup` with its own log and stops by SIGTERM at one shared deadline
# (runs/gpu/end_at, set by the first `start`: now + GPU_TRAIN_SECONDS, default 480), which saves its
# last.pt and model.pt / final snapshot as on the CPU. `status` prints the logs' tails and nvidia-smi.
# Each job's extra arguments can be replaced: P1A_ARGS, P1B_ARGS, P1B2_ARGS, DIFF_ARGS, ACGAN_ARGS, SAGAN_ARGS;
# FACE_METHODS picks the face jobs (default "A B B2"; e.g. FACE_METHODS=B gives a short lease's GPU to B alone).
# DIGIT_MODELS likewise picks the digit jobs (default "diffusion acgan sagan").
# GPU_TINY=1 runs the same jobs with tiny settings (the test runs it on the CPU); GPU_RUNS, GPU_DATA,
# GPU_CARRY, GPU_PACK_LIMIT, FACE_PARTS and DIGIT_PARTS move its folders / shrink or split the packs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
runs=${GPU_RUNS:-runs/gpu}
data=${GPU_DATA:-hw2_data_gpu}
carry=${GPU_CARRY:-carry}
limit_arg=${GPU_PACK_LIMIT:+--limit $GPU_PACK_LIMIT}
mkdir -p "$runs"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

init_arg() {  # init_arg NAME [SHIPPED]: go on from $runs/init/NAME.pt (carried), else SHIPPED where it exists
    local f="$runs/init/$1.pt"
    [ -f "$f" ] || f=${2:-}
    [ -n "$f" ] && [ -f "$f" ] && echo "--init-from $f"
    return 0
}

gan_init() {  # gan_init NAME [SHIPPED]: init_arg, and D trains alone for the first 300 steps of such a run
    local a
    a=$(init_arg "$@")
    [ -n "$a" ] && echo "$a --d-warmup 300"
    return 0
}

if [ "${GPU_TINY:-0}" = 1 ]; then
    steps=4; p1x="--limit 64 --batch-size 16 --ngf 8 --ndf 8 --snapshot-every 2"
    p2x="--max-images 256 --batch-size 32 --sample-every 0"
    diffx="--base-channels 8 --eval-every 0"; ganx="--g-channels 8 --d-channels 8 --eval-every 0"
    a_x="$(gan_init p1_A)"; b_x="$(gan_init p1_B)"; b2_x="--d-arch dcgan --loss bce $(gan_init p1_B2)"
    diff_x="$(init_arg p2_diffusion)"
    acgan_x="--aux-fake-weight 0 --snapshot-every 1000 $(gan_init p2_acgan)"
    sagan_x="--d-projection true --d-head-blind true --aux-weight 1 --aux-fake-weight 0 --snapshot-every 1000 $(gan_init p2_sagan)"
else
    steps=1000000; p1x="--sample-every 2000"; p2x="--sample-every 4000"; diffx="--eval-every 2000"; ganx="--eval-every 2000"
    # session 3's recipes: A as the reference DCGAN; B with the SNGAN standard-CNN D (session 2's B lost
    # its D: hinge loss ~1.9); B2 = BatchNorm D + BCE + EMA + DiffAugment translation; diffusion goes on
    # from the shipped weights at batch 256
    # Every GAN goes on from its last weights (gan_init) in a fresh run folder. The final snapshot of
    # every run keeps D as well, so the next session can carry it back (carry/init*/NAME.pt ->
    # $runs/init/, see `unpack`). B falls back to its shipped file, which keeps D since session 15; A to
    # its shipped G with a fresh D (its file has none). The p2 GANs' shipped files keep D too (session 11
    # passed them in ACGAN_ARGS / SAGAN_ARGS). No trained G of B, B2 or ACGAN gets a fresh D: session 4 measured
    # that a fresh D never catches up with the trained G of B, B2 or ACGAN (D stayed at chance,
    # d_real - d_fake ~ 0, for 14-35k steps: FID B2 31.5 -> 57, B 33.2 -> 316, ACGAN 82 -> 136 while
    # its aux classifier still pushed accuracy 98.0 -> 99.4 %); A's D (no DiffAugment) did.
    # A: EMA (raw A snapshots swing 33-44 FID) and, since session 6, lr 5e-5 for G and D: on the CPU
    # that took the EMA run from FID 32.6 to 30.61 in 1,000 steps, where lr 2e-4 had stalled at 32.4-33.0
    a_x="--snapshot-every 4000 --ema-decay 0.999 --lr-g 5e-5 --lr-d 5e-5 $(gan_init p1_A checkpoints/p1_methodA.pt)"
    b_x="--snapshot-every 4000 $(gan_init p1_B checkpoints/p1_methodB.pt)"  # B's defaults include --d-extra true
    b2_x="--d-arch dcgan --loss bce --lr-d 2e-4 --batch-size 128 --diffaug translation --snapshot-every 6000 $(gan_init p1_B2)"
    diff_x="--batch-size 256 --warmup-steps 200"
    diff_x="$diff_x $(init_arg p2_diffusion checkpoints/p2_diffusion.pt)"
    # p2 GANs: one snapshot (the final one, with D) besides model.pt (best accuracy). Session 5 (CPU):
    # D's class head learns from real images only (--aux-fake-weight 0), and SAGAN's D gained one
    # (--aux-weight 1): both lifted the classifier accuracy (see the session 5 note)
    acgan_x="--aux-weight 2 --aux-fake-weight 0 --eval-every 1000 --snapshot-every 100000000 $(gan_init p2_acgan)"
    sagan_x="--batch-size 128 --d-projection true --d-head-blind true --aux-weight 1 --aux-fake-weight 0 --snapshot-every 100000000 $(gan_init p2_sagan)"
fi
a_x=${P1A_ARGS-$a_x}; b_x=${P1B_ARGS-$b_x}; b2_x=${P1B2_ARGS-$b2_x}
diff_x=${DIFF_ARGS-$diff_x}; acgan_x=${ACGAN_ARGS-$acgan_x}; sagan_x=${SAGAN_ARGS-$sagan_x}

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

unpack() {  # unpack carry/NAME... into $data, each once (the data folder outlives the calls; packs may not)
    local name
    mkdir -p "$data"  # the markers live there, also when an init pack comes before any data pack
    for name in "$@"; do
        [ -f "$data/.unpacked_$name" ] && continue
        [ -d "$carry/$name" ] || { echo "no pack $carry/$name (carry it in this call)" >&2; exit 2; }
        if [[ $name == init* ]]; then  # weights to go on from (init_arg): kept in the run folder
            mkdir -p "$runs/init" && cp "$carry/$name"/*.pt "$runs/init/" && ls -l "$runs/init"
        else
            "$py" scripts/gpu_pack.py unpack "$carry/$name" --data "$data"
        fi
        touch "$data/.unpacked_$name"
    done
}

check_names() {  # check_names WHAT VAR "NAMES" CHOICE...: every name is a CHOICE, else a one-line error
    local what=$1 var=$2 names=$3 m c; shift 3
    for m in $names; do
        for c in "$@"; do [ "$m" = "$c" ] && continue 2; done
        local list; list=$(printf '%s, ' "$@")
        echo "unknown $what $m in $var (${list%, })" >&2; exit 2
    done
}

alive() { local n=0; while read -r pid name; do kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done <"$runs/pids"; echo $n; }

cmd=${1:-}
case "$cmd" in
pack)
    parts=${FACE_PARTS:-2}
    for ((i = 0; i < parts; i++)); do
        "$py" scripts/gpu_pack.py pack faces --data "${2:-hw2_data}" --out "$carry/faces_$i" --part "$i/$parts" $limit_arg
    done
    parts=${DIGIT_PARTS:-3}  # lossless since session 16: ~60 MiB in all
    for ((i = 0; i < parts; i++)); do
        "$py" scripts/gpu_pack.py pack digits --data "${2:-hw2_data}" --out "$carry/digits_$i" --part "$i/$parts" \
            $limit_arg --classifier "${HW2_CLASSIFIER:-../shared/evaluators/Classifier.pth}"
    done
    ;;
unpack)
    shift
    unpack "$@"
    ;;
start)
    kind=${2:?usage: train_gpu.sh start faces|digits}
    [ "$kind" = faces ] || [ "$kind" = digits ] || { echo "unknown kind $kind (faces or digits)" >&2; exit 2; }
    check_names "face method" FACE_METHODS "${FACE_METHODS:-A B B2}" A B B2  # before anything is launched
    check_names "digit model" DIGIT_MODELS "${DIGIT_MODELS:-diffusion acgan sagan}" diffusion acgan sagan
    end=$(( $(date +%s) + ${GPU_TRAIN_SECONDS:-480} ))  # counted from now, written once the jobs can start
    touch "$runs/pids"
    unpack $(cd "$carry" && ls -d ${kind}* 2>/dev/null)
    if [ "$kind" = digits ]; then  # a digits part unpacks the whole csv: train once every part's images are there
        n_csv=$(( $(wc -l <"$data/digits/mnistm/train.csv") - 1 )); n_img=$(ls "$data/digits/mnistm/data" | wc -l)
        if [ "$n_img" -lt "$n_csv" ]; then
            echo "only $n_img of $n_csv mnistm train images are unpacked in $data: carry the missing digits_K parts" >&2
            exit 2
        fi
    fi
    [ -f "$runs/end_at" ] || echo "$end" >"$runs/end_at"  # a refused start leaves no deadline behind
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
    if [ "$kind" = faces ]; then
        for m in ${FACE_METHODS:-A B B2}; do
            case $m in A) x=$a_x;; B) x=$b_x;; B2) x=$b2_x;; esac
            launch "p1_$m" "$py" -m p1_gan.train --method "${m:0:1}" --data "$data/face" --run-dir "$runs/p1_$m" \
                --cache-dir "$runs/cache" --eval-every 0 --max-steps "$steps" --no-progress $p1x $x
        done
    else
        export HW2_CLASSIFIER=$(cd "$data" && pwd)/Classifier.pth  # unpacked beside the data: a later call's
        # carry/digits is a fresh copy of the pack (session 11's second call lost its jobs at the first eval)
        [ "${GPU_TINY:-0}" = 1 ] && unset HW2_CLASSIFIER
        for m in ${DIGIT_MODELS:-diffusion acgan sagan}; do
            case $m in diffusion) x="$diffx $diff_x";; acgan) x="$ganx $acgan_x";; sagan) x="$ganx $sagan_x";; esac
            launch "p2_$m" "$py" -m p2_diffusion_acgan.train --model "$m" --run "$runs/p2_$m" \
                --data-root "$data" --max-steps "$steps" $p2x $x
        done
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
    # nothing is left to watch: stop the watchdog now rather than at the deadline
    [ -f "$runs/watchdog.pid" ] && { kill -TERM "$(cat "$runs/watchdog.pid")" 2>/dev/null || true; rm -f "$runs/watchdog.pid"; }
    for f in "$runs"/*.log; do echo "== $f"; tail -c 400 "$f"; echo; done
    "$py" scripts/gpu_pack.py bundle "$runs" "$out"
    ;;
*)
    sed -n '2,22p' "$0"; exit 2
    ;;
esac
