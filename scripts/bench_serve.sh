#!/usr/bin/env bash
# Load test of `genrec serve` with wrk on loopback. Starts the server on RUN_DIR (its own
# temporary --state dir), runs POST /v1/recommend at each concurrency (default 1, 8, 32), then a
# mixed load at each concurrency (default 10% POST /v1/events), and prints one JSON object: QPS, latency p50/p90/p99,
# non-2xx responses and socket errors per load, the server's resident memory (VmRSS) before and
# after, and a few engine counters from /metrics. Exits 1 if any request failed (non-2xx or a
# socket error) or the server did not stop cleanly, 2 on bad usage.
#
#   scripts/bench_serve.sh RUN_DIR [-d SECONDS] [-c "1 8 32"] [options]
#
# Options:
#   -d, --duration S         seconds per load level (default 60)
#   -c, --concurrency LIST   recommend concurrencies, space- or comma-separated (default "1 8 32")
#   --mixed-concurrency LIST connections of the mixed loads (default: the -c list; 0 = skip)
#   --write-percent P        share of /v1/events in the mixed load (default 10)
#   --warmup S               unrecorded warm-up before the first level (default 5; 0 = none)
#   --users FILE             raw user ids, one per line (default: the run dataset's users.vocab)
#   --items FILE             raw item ids for events (default: the dataset's items.vocab)
#   --k K                    items per recommendation (default 10)
#   --workers N              server worker threads (default: max(16, 2 x the largest concurrency))
#   --genrec PATH            genrec binary (default: build/bin/genrec next to this script)
#   --no-sync                start the server with --no-sync (events not fsynced: not durable)
#   --server-args "ARGS"     more `genrec serve` options, e.g. "--max-batch 64 --threads 4"
#   --out FILE               also write the JSON object to FILE
# The token for /v1/events, if the server should require one, comes from $GENREC_SERVE_TOKEN
# (used by both the server and bench/wrk/mixed.lua).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "bench_serve: $*" >&2; exit 2; }

RUN="" DURATION=60 CONC="1 8 32" MIXED_C="" WRITE_PCT=10 WARMUP=5 USERS="" ITEMS="" K=10 WORKERS=""
GENREC="$ROOT/build/bin/genrec" NO_SYNC="" SERVER_ARGS="" OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -d|--duration) DURATION="$2"; shift 2 ;;
    -c|--concurrency) CONC="${2//,/ }"; shift 2 ;;
    --mixed-concurrency) MIXED_C="${2//,/ }"; shift 2 ;;
    --write-percent) WRITE_PCT="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --users) USERS="$2"; shift 2 ;;
    --items) ITEMS="$2"; shift 2 ;;
    --k) K="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --genrec) GENREC="$2"; shift 2 ;;
    --no-sync) NO_SYNC="--no-sync"; shift ;;
    --server-args) SERVER_ARGS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z "$RUN" ]] || die "one run directory only"; RUN="$1"; shift ;;
  esac
done
[[ -n "$RUN" ]] || usage
[[ -d "$RUN" ]] || die "$RUN: not a directory"
[[ -x "$GENREC" ]] || die "$GENREC: not built (cmake --build build --target genrec_cli) or pass --genrec"
command -v wrk >/dev/null || die "wrk not found (apt-get install wrk)"
for n in $DURATION $WRITE_PCT $WARMUP $K $CONC ${MIXED_C:-0} ${WORKERS:-1}; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "'$n' is not a non-negative integer"
done
MAX_C=0
for c in $CONC; do
  [[ "$c" -ge 1 ]] || die "concurrency must be >= 1"
  (( c > MAX_C )) && MAX_C=$c
done
MIXED_C="${MIXED_C:-$CONC}"
[[ "$MIXED_C" == "0" ]] && MIXED_C=""
for c in $MIXED_C; do (( c > MAX_C )) && MAX_C=$c; done
WORKERS="${WORKERS:-$(( 2 * MAX_C > 16 ? 2 * MAX_C : 16 ))}"
(( MAX_C <= WORKERS )) ||
  echo "bench_serve: warning: more connections than --workers; connections wait for a worker" >&2

# The run's dataset (data.path in its config.toml) has the id vocabularies.
DATA="$(awk '/^\[/{s=$0} s=="[data]" && /^path[ \t]*=/{sub(/^path[ \t]*=[ \t]*/,""); gsub(/^["\x27]|["\x27][ \t]*$/,""); print; exit}' "$RUN/config.toml" 2>/dev/null || true)"
USERS="${USERS:-$DATA/users.vocab}"
ITEMS="${ITEMS:-$DATA/items.vocab}"
[[ -s "$USERS" ]] || die "no user ids: $USERS (pass --users FILE)"
[[ -s "$ITEMS" ]] || die "no item ids: $ITEMS (pass --items FILE)"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/genrec-bench-serve.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo null; }

# ---- start the server ----
# shellcheck disable=SC2086
"$GENREC" -q serve --run "$RUN" --port 0 --state "$TMP/state" --workers "$WORKERS" $NO_SYNC $SERVER_ARGS \
  >"$TMP/ready" 2>"$TMP/server.log" &
SERVER_PID=$!
for _ in $(seq 1 1200); do
  [[ "$(wc -l <"$TMP/ready")" -ge 1 ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; echo "bench_serve: server exited" >&2; exit 1; }
  sleep 0.1
done
READY="$(head -n 1 "$TMP/ready")"
PORT="$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' <<<"$READY")"
[[ -n "$PORT" ]] || { cat "$TMP/server.log" >&2; echo "bench_serve: no listening line from the server" >&2; exit 1; }
URL="http://127.0.0.1:$PORT"
echo "bench_serve: server pid $SERVER_PID on $URL ($WORKERS workers); ${DURATION}s per level" >&2
RSS_START="$(rss_kb "$SERVER_PID")"

# ---- loads ----
# run_wrk CONNECTIONS SECONDS SCRIPT ARGS... -> the JSON object printed by the script's done()
run_wrk() {
  local c="$1" d="$2" script="$3"; shift 3
  local t=$(( c < 2 ? c : 2 ))
  local out
  out="$(wrk -t"$t" -c"$c" -d"${d}s" --timeout 10s -s "$ROOT/bench/wrk/$script" "$URL" -- "$@" 2>&1)" ||
    { echo "$out" >&2; echo "bench_serve: wrk failed" >&2; return 1; }
  local line
  line="$(grep '^GENREC_WRK_JSON ' <<<"$out" | head -n 1)"
  [[ -n "$line" ]] || { echo "$out" >&2; echo "bench_serve: no result line from wrk" >&2; return 1; }
  echo "${line#GENREC_WRK_JSON }"
}
# failures JSON -> non-2xx + socket errors
failures() {
  local j="$1" n=0 v
  for key in non_2xx connect read write timeout; do
    v="$(sed -n "s/.*\"$key\":\([0-9]*\).*/\1/p" <<<"$j")"
    n=$(( n + ${v:-0} ))
  done
  echo "$n"
}

if (( WARMUP > 0 )); then
  run_wrk "$MAX_C" "$WARMUP" recommend.lua "$USERS" "$K" >/dev/null
fi
RSS_WARM="$(rss_kb "$SERVER_PID")"

FAILED=0
RECOMMEND=""
for c in $CONC; do
  echo "bench_serve: /v1/recommend, $c connection(s)" >&2
  j="$(run_wrk "$c" "$DURATION" recommend.lua "$USERS" "$K")"
  FAILED=$(( FAILED + $(failures "$j") ))
  RECOMMEND+="${RECOMMEND:+,}\"$c\":$j"
done
MIXED=""
for c in $MIXED_C; do
  echo "bench_serve: mixed load, $c connection(s), ${WRITE_PCT}% /v1/events" >&2
  j="$(run_wrk "$c" "$DURATION" mixed.lua "$USERS" "$ITEMS" "$WRITE_PCT")"
  FAILED=$(( FAILED + $(failures "$j") ))
  MIXED+="${MIXED:+,}\"$c\":$j"
done
MIXED="{\"write_percent\":$WRITE_PCT,\"by_concurrency\":{$MIXED}}"
RSS_END="$(rss_kb "$SERVER_PID")"

# Engine counters from /metrics (optional: needs curl).
ENGINE="null"
if command -v curl >/dev/null; then
  M="$(curl -s "$URL/metrics" || true)"
  metric() { awk -v n="$1" '$1==n{print $2; exit}' <<<"$M"; }
  ENGINE="{\"cache_hit_ratio\":$(metric genrec_engine_cache_hit_ratio || true),\"mean_batch_size\":$(metric genrec_engine_mean_batch_size || true),\"batches\":$(metric genrec_engine_batches_total || true),\"events_stored\":$(metric genrec_engine_events_stored || true)}"
  [[ "$ENGINE" == *":,"* || "$ENGINE" == *":}"* ]] && ENGINE="null"
fi

# ---- stop ----
kill -TERM "$SERVER_PID"
set +e
wait "$SERVER_PID"
SERVER_EXIT=$?
set -e
SERVER_PID=""
[[ "$SERVER_EXIT" -eq 0 ]] || { tail -n 20 "$TMP/server.log" >&2; echo "bench_serve: server exited with $SERVER_EXIT" >&2; }

RESULT="{\"run\":\"$RUN\",\"duration_s\":$DURATION,\"workers\":$WORKERS,\"k\":$K,\"sync_writes\":$([[ -z "$NO_SYNC" ]] && echo true || echo false),\"server_args\":\"$SERVER_ARGS\",\"rss_kb\":{\"start\":$RSS_START,\"after_warmup\":$RSS_WARM,\"end\":$RSS_END},\"recommend\":{$RECOMMEND},\"mixed\":$MIXED,\"engine\":$ENGINE,\"failed_requests\":$FAILED,\"server_exit_code\":$SERVER_EXIT}"
echo "$RESULT"
[[ -z "$OUT" ]] || echo "$RESULT" >"$OUT"
(( FAILED == 0 && SERVER_EXIT == 0 )) || exit 1
