#!/usr/bin/env bash
# Every GPU measurement, each in its own process under its own time limit, so that one that fails or runs
# long leaves the others' results: tables go to OUT/<part>/gpu.md (written as each table is done), logs to
# OUT/<part>.log, and a line per part with its exit status and seconds to OUT/parts.txt.
#
#   bash benchmarks/gpu_all.sh OUT [part ...]
#   ARGS="--compile-mode default" bash benchmarks/gpu_all.sh OUT profile one   (extra arguments for
#   benchmarks/gpu.py and step_profile.py)
#
# Within 15 minutes of one H100 (the machine's start included): `main` alone (the GPU main job, about 6
# minutes estimated) and, on the warm machine straight after, `jobshape`; or two calls: `tests one` (154 s and
# 187 s there on 2026-11-27, plus up to 28 s of setup), then at once `sweep` (299 s).
#
# Parts, in the default order (the GPU main job first: the product's answer from GPU runs; then the CUDA-only
# tests: short, and what every number relies on; then what is least measured so far), with their limits in
# seconds on one H100:
#   main (510)     one solo run of the job's shape, `powersweep demo --gpu` end to end (stopped at 390 s, the
#                  rows it stored fitted), then the start-up of the shape on the warm compile cache
#                  (benchmarks/gpu_main_job.py: OUT/main/solo.json, main.md, its store and report under OUT/main)
#   tests (210)    the CUDA-only tests
#   profile (3 x 60) where a paper-12m step's time goes at 16 x 1024: solo (the trunk as CUDA graphs, the
#                  default, and the blocks compiled without them) and 8 packed variants (benchmarks/step_profile.py)
#   packed (120)   the packed table
#   sweep (360)    the 16-lineage sweep through Ray (4 lrs x 4 seeds, one trial of 16 on an 80 GB GPU), budgets
#                  $SWEEP_BUDGETS (default 3M 6M 12M: 207M tokens; the part took 299 s on one H100, the sweep's
#                  wall 250 s)
#   one (240)      the one-run table
#   modes (4 x 120, 150) paper-12m solo at 16 x 4096 under compile scope blocks, trunk and CUDA graphs, and 8 packed
#                  variants at 16 x 1024 under blocks and CUDA graphs: tokens/s and where a step's time goes
#                  (benchmarks/step_profile.py; reports in OUT/modes/, their first lines in OUT/modes.md)
#   head (120)     the head paths table      compile (120) the compile table
# Not in the default order:
#   jobshape (90, 90, 150) the GPU main job's packed step (paper-12m, 8 variants at 16 x 512, vocabulary 256)
#                  as the job runs it (the blocks compiled, the plain full head: its logits fit one chunk),
#                  with liger's fused head (a host sync per variant), and with the trunk as CUDA graphs: what
#                  keeps it on or takes it off the host's pace (benchmarks/step_profile.py; reports in
#                  OUT/jobshape/, their first lines in OUT/jobshape.md)
#   checkpoint (2 x 150) what trunk checkpoints cost a lineage of 16 packed paper-12m variants at 16 x 1024, saved in
#                  the background and synchronously (benchmarks/checkpoint_cost.py)
set -u
OUT=${1:?usage: bash benchmarks/gpu_all.sh OUT [part ...]}
shift
if (($#)); then PARTS=("$@"); else PARTS=(main tests profile packed sweep one modes head compile); fi
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
PY=${PYTHON:-python3}
# ARGS and SWEEP_BUDGETS are lists of words: split them once, here.
read -r -a ARGS <<< "${ARGS:-}"
read -r -a BUDGETS <<< "${SWEEP_BUDGETS:-3M 6M 12M}"

run() {  # name limit command...
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc $? in $((SECONDS - start)) s" | tee -a "$OUT/parts.txt"
}

modes() {  # each compile setting, solo at 16 x 4096 and 8 packed at 16 x 1024 (packed trunk: CUDA graphs only)
  local setting scope mode shape pack limit
  for setting in "blocks default" "trunk default" "auto reduce-overhead"; do
    read -r scope mode <<< "$setting"
    for shape in solo-16x4096 k8-16x1024; do
      [ "$shape" = k8-16x1024 ] && [ "$scope $mode" = "trunk default" ] && continue
      pack=0; [ "${shape%%-*}" = k8 ] && pack=8
      # the packed trunk's cold compile is about twice its block's (RESULTS.md, CPU)
      limit=120; [ "$pack $scope" = "8 auto" ] && limit=150
      run "modes-$shape-$scope-$mode" "$limit" "$PY" benchmarks/step_profile.py --preset paper-12m \
          --shape "${shape#*-}" --pack "$pack" --compile-scope "$scope" --compile-mode "$mode" --out "$OUT/modes"
    done
  done
  head -qn1 "$OUT"/modes/*.txt > "$OUT/modes.md" 2>/dev/null || true
}

jobshape() {  # the GPU main job's packed step as it runs, with liger's fused head, with CUDA graphs
  local setting scope mode head limit
  for setting in "blocks default auto 90" "blocks default fused 90" "auto reduce-overhead auto 150"; do
    read -r scope mode head limit <<< "$setting"
    run "jobshape-k8-16x512-$scope-$mode-head-$head" "$limit" "$PY" benchmarks/step_profile.py \
        --preset paper-12m --shape 16x512 --pack 8 --vocab-size 256 --compile-scope "$scope" \
        --compile-mode "$mode" --head "$head" --out "$OUT/jobshape"
  done
  head -qn1 "$OUT"/jobshape/*.txt > "$OUT/jobshape.md" 2>/dev/null || true
}

for part in "${PARTS[@]}"; do
  case $part in
    main) run main 510 "$PY" benchmarks/gpu_main_job.py --out "$OUT/main" --job-limit-s 390 ;;
    modes) modes ;;
    jobshape) jobshape ;;
    profile) run profile-solo 60 "$PY" benchmarks/step_profile.py --preset paper-12m --shape 16x1024 \
                 --out "$OUT" "${ARGS[@]}"
             run profile-solo-no-graphs 60 "$PY" benchmarks/step_profile.py --preset paper-12m --shape 16x1024 \
                 --compile-mode default --out "$OUT"
             run profile-k8 60 "$PY" benchmarks/step_profile.py --preset paper-12m --shape 16x1024 --pack 8 \
                 --out "$OUT" "${ARGS[@]}" ;;
    tests) run tests 210 "$PY" -m pytest -q -rs -p no:cacheprovider tests/proxy_models/test_head.py \
               tests/proxy_models/test_moe.py \
               tests/proxy_models/test_trainer.py::test_cuda_graphs_accumulate_micro_batches_like_eager_on_gpu \
               tests/proxy_models/test_lineage.py::test_cuda_graphs_train_a_whole_lineage_like_eager_on_gpu ;;
    checkpoint) for mode in "" --synchronous; do
                  run "checkpoint${mode:+-synchronous}" 150 "$PY" benchmarks/checkpoint_cost.py --device cuda \
                      --preset paper-12m --pack 16 --shape 16x1024 --budgets 10 20 30 ${mode:+"$mode"}
                done ;;
    sweep) run sweep 360 "$PY" benchmarks/gpu.py --only sweep --sweep-budgets "${BUDGETS[@]}" \
               --out "$OUT/sweep" "${ARGS[@]}" ;;
    one|head|packed|compile) run "$part" "$(case $part in one) echo 240;; *) echo 120;; esac)" \
                                 "$PY" benchmarks/gpu.py --only "$part" --out "$OUT/$part" "${ARGS[@]}" ;;
    *) echo "unknown part $part: main tests profile packed sweep one modes head compile checkpoint jobshape" >&2
       exit 2 ;;
  esac
done
