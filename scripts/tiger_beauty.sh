#!/usr/bin/env bash
# The measured TIGER recipe on Amazon Beauty (docs/semantic_ids.md, issue "Semantic IDs and
# generative retrieval"), end to end, for several seeds:
#   1. import Beauty (s3rec sequences + item2attributes) from ../shared/data
#   2. SASRec (configs/beauty/sasrec.toml, one run per seed of SASREC_SEEDS) for the items'
#      collaborative embeddings
#   3. genrec's own semantic IDs: RQ-k-means 3 x 256 over the SASRec embeddings + attributes
#   4. per seed, stage 1 (configs/beauty/tiger-items.toml; checkpoints chosen without the
#      history bias) and stage 2 (configs/beauty/tiger-items-continue.toml from stage 1's best
#      weights), validation on 5,000 users, one thread per run, JOBS seeds at a time
#   5. the table: test metrics at the best validation ndcg@10 (scripts/summarize_runs.py)
# Steps whose output exists are skipped, so a stopped script continues where it was (a run
# interrupted mid-way is continued with `genrec train --resume`); for another variant (other
# extra arguments or SID) use another WORK, since finished runs in WORK are reused as they are.
#
#   scripts/tiger_beauty.sh                          # seeds 42 43 44, two at a time, in work/tiger
#   SEEDS="42" JOBS=1 WORK=/tmp/t scripts/tiger_beauty.sh --set model.max_items=20
# Extra arguments are passed to both TIGER stages (e.g. a lever to compare). Environment:
#   SEEDS (default "42 43 44"), JOBS (2), WORK (work/tiger; work/tiger-NAME for another DATASET),
#   SHARED (../shared/data), DATASET (Beauty; another s3rec set of SHARED/amazon2014_s3rec, e.g.
#   Sports_and_Outdoors, takes the same recipe unchanged — measured on Beauty only),
#   SID (own: genrec's RQ-k-means IDs; letter: the LETTER reference IDs, imported; Beauty only),
#   SASREC_SEEDS (42; several, e.g. "42 43 44": the IDs are built over all their runs' embeddings,
#   in sid/beauty-own-42-43-44; measured, not adopted: docs/semantic_ids.md),
#   STAGE1_EPOCHS / STAGE2_EPOCHS / SASREC_EPOCHS / EVAL_USERS (the recipe's: 16 / 8 / 200 / 5000;
#   smaller values only to smoke-test the pipeline). With the configs' model size (6 heads x 64,
#   d_ff 1024) and the AVX-512 kernels (core/blas.h), one seed took about 100 min (stage 1 65-67,
#   stage 2 32-42) with two seeds sharing 2 cores; the earlier size (4 heads x 32, d_ff 512) ran
#   SEEDS="42 43 44" JOBS=3 in under 2 hours on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
G="${GENREC:-$ROOT/build/bin/genrec}"
SEEDS="${SEEDS:-42 43 44}"
JOBS="${JOBS:-2}"
DATASET="${DATASET:-Beauty}"
NAME="$(echo "$DATASET" | tr 'A-Z' 'a-z')"
if [ "$NAME" = beauty ]; then WORK="${WORK:-$ROOT/work/tiger}"; else WORK="${WORK:-$ROOT/work/tiger-$NAME}"; fi
SHARED="${SHARED:-$ROOT/../shared/data}"
SID="${SID:-own}"
STAGE1_EPOCHS="${STAGE1_EPOCHS:-16}"
STAGE2_EPOCHS="${STAGE2_EPOCHS:-8}"
SASREC_EPOCHS="${SASREC_EPOCHS:-200}"
SASREC_SEEDS="${SASREC_SEEDS:-42}"
EVAL_USERS="${EVAL_USERS:-5000}"
EXTRA=("$@")

die() { echo "tiger_beauty.sh: $*" >&2; exit 1; }
[ -x "$G" ] || die "no genrec binary at $G (bash scripts/build.sh genrec_cli, or set GENREC)"
S3="$SHARED/amazon2014_s3rec"
[ -f "$S3/$DATASET.txt" ] || die "$DATASET not found: $S3/$DATASET.txt (set SHARED to the shared data folder, DATASET to a set there)"
[ -f "$S3/${DATASET}_item2attributes.json" ] || die "no item attributes for $DATASET: $S3/${DATASET}_item2attributes.json"
case "$SID" in own | letter) ;; *) die "SID must be own or letter, got '$SID'" ;; esac
[ "$SID" = own ] || [ "$NAME" = beauty ] || die "SID=letter: the LETTER reference IDs in $SHARED are for Beauty only"
mkdir -p "$WORK/runs" "$WORK/logs"
cd "$WORK"
step() { echo "[$(date +%H:%M:%S)] $*"; }

DATA="data/$NAME"
if [ ! -f "$DATA/items.vocab" ]; then
  step "import $DATASET"
  "$G" data import --format s3rec --input "$S3/$DATASET.txt" --items "$S3/${DATASET}_item2attributes.json" \
    --out "$DATA" > logs/import.log 2>&1
fi

if [ "$SID" = own ]; then
  # One SASRec run per seed in SASREC_SEEDS; each run's item embeddings enter the content as a
  # block of weight 1/sqrt(number of runs), so that the squared distance k-means sees is their
  # average (plus the attributes') whatever the number of runs.
  n_sasrec=$(echo $SASREC_SEEDS | wc -w)
  [ "$n_sasrec" -ge 1 ] || die "SASREC_SEEDS is empty"
  w=$(python3 -c "print(f'{1/$n_sasrec**0.5:.6g}')")
  SID_DIR="sid/$NAME-own"
  [ "$SASREC_SEEDS" = 42 ] || SID_DIR="sid/$NAME-own-$(echo $SASREC_SEEDS | tr ' ' -)"
  features=()
  for ss in $SASREC_SEEDS; do
    if [ ! -f "runs/sasrec-s$ss/metrics.json" ]; then
      step "SASRec seed $ss (collaborative item embeddings)"
      "$G" train --config "$ROOT/configs/beauty/sasrec.toml" --data "$DATA" --out "runs/sasrec-s$ss" \
        --set train.seed="$ss" --set train.epochs="$SASREC_EPOCHS" > "logs/sasrec-s$ss.log" 2>&1
    fi
    features+=(--features "run:runs/sasrec-s$ss:$w")
  done
  if [ ! -f "$SID_DIR/codes.bin" ]; then
    step "sid build (RQ-k-means 3 x 256 over the SASRec embeddings of seeds $SASREC_SEEDS + attributes)"
    "$G" sid build --data "$DATA" "${features[@]}" --features attributes:32:0.5 \
      --method rq-kmeans --levels 3 --codebook 256 --out "$SID_DIR" > logs/sid.log 2>&1
  fi
else
  SID_DIR=sid/beauty-letter
  if [ ! -f "$SID_DIR/codes.bin" ]; then
    step "sid import (LETTER reference IDs)"
    "$G" sid build --data "$DATA" --import "$SHARED/semantic_ids/letter_beauty/Beauty.index.json" \
      --id-offset 1 --out "$SID_DIR" > logs/sid.log 2>&1
  fi
fi

# One seed: stage 1, then stage 2 from its best weights; each continued with --resume when a
# previous invocation stopped mid-run.
train_stage() {  # NAME CONFIG SETS...
  local name=$1 config=$2
  shift 2
  if [ -f "runs/$name/metrics.json" ]; then return 0; fi
  if [ -f "runs/$name/checkpoints/last.ckpt" ]; then
    "$G" train --resume --out "runs/$name" >> "logs/$name.log" 2>&1
  else
    rm -rf "runs/$name"
    "$G" train --config "$config" --data "$DATA" --out "runs/$name" "$@" > "logs/$name.log" 2>&1
  fi
}
one_seed() {
  local s=$1
  local common=(--set train.seed="$s" --set train.threads=1 --set train.eval_users="$EVAL_USERS"
                --set model.sid="$SID_DIR/codes.bin")
  step "seed $s: stage 1"
  train_stage "stage1-s$s" "$ROOT/configs/beauty/tiger-items.toml" "${common[@]}" \
    --set train.epochs="$STAGE1_EPOCHS" --set model.history_bias=false ${EXTRA[@]+"${EXTRA[@]}"}
  step "seed $s: stage 2"
  train_stage "stage2-s$s" "$ROOT/configs/beauty/tiger-items-continue.toml" "${common[@]}" \
    --set train.epochs="$STAGE2_EPOCHS" --set train.init_from="runs/stage1-s$s" ${EXTRA[@]+"${EXTRA[@]}"}
  step "seed $s: done"
}

pids=()
for s in $SEEDS; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 10; done
  one_seed "$s" &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || die "a training failed; see $WORK/logs"

runs=""
for s in $SEEDS; do runs="$runs${runs:+,}runs/stage2-s$s"; done
step "test metrics at the best validation ndcg@10 (stage 2)"
python3 "$ROOT/scripts/summarize_runs.py" --keys recall@5,ndcg@5,recall@10,ndcg@10 "tiger, $DATASET ($SID IDs)=$runs"
case "$NAME" in
  beauty) echo "published TIGER (NeurIPS 2023), Beauty: recall@5 0.0454, ndcg@5 0.0321, recall@10 0.0648, ndcg@10 0.0384" ;;
  sports_and_outdoors) echo "published TIGER (NeurIPS 2023), Sports: recall@5 0.0264, ndcg@5 0.0181, recall@10 0.0400, ndcg@10 0.0225" ;;
esac
