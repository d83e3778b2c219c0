#!/usr/bin/env bash
# Source coverage of Eddy's crates by a fuzz run (docs/fuzzing.md "Coverage"): builds eddy-fuzz
# with `-C instrument-coverage` on Eddy's own crates only (dependencies as usual), runs each
# target for SECONDS (default 60) with seed SEED (default 7), and prints llvm-cov's line and
# region coverage of engine/, connectors/ and server/. Needs rustup's llvm-tools component
# (`rustup component add llvm-tools`). Not part of .ci/run: it builds a second target dir.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_PER_TARGET=${1:-60}
SEED=${2:-7}
TARGET_DIR=${EDDY_COVERAGE_TARGET_DIR:-$HOME/.cache/eddy-coverage}
TOOLS="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# rustc wrapper: instrument only the crates named eddy_*.
cat > "$WORK/rustc-wrapper" <<'WRAP'
#!/usr/bin/env bash
rustc="$1"; shift
crate=""; prev=""
for a in "$@"; do [[ $prev == "--crate-name" ]] && crate=$a; prev=$a; done
if [[ $crate == eddy_* ]]; then exec "$rustc" "$@" -C instrument-coverage; fi
exec "$rustc" "$@"
WRAP
chmod +x "$WORK/rustc-wrapper"
RUSTC_WRAPPER="$WORK/rustc-wrapper" CARGO_TARGET_DIR="$TARGET_DIR" CARGO_INCREMENTAL=0 \
  cargo build -p eddy-fuzz
BIN="$TARGET_DIR/debug/eddy-fuzz"
export EDDY_FUZZ_DIR="$PWD/sql-tests/fuzz"
for target in sql pgwire pattern csv json parquet kafka; do
  # A generous deadline: the instrumented debug build is slower than the one CI runs.
  LLVM_PROFILE_FILE="$WORK/$target-%p.profraw" \
    "$BIN" "$target" --seconds "$SECONDS_PER_TARGET" --seed "$SEED" --timeout-ms 10000
done
"$TOOLS/llvm-profdata" merge -sparse "$WORK"/*.profraw -o "$WORK/all.profdata"
"$TOOLS/llvm-cov" report "$BIN" -instr-profile="$WORK/all.profdata" \
  --ignore-filename-regex='(\.cargo|rustc|fuzz/src)' |
  awk '$1 ~ /^(engine|connectors|server)\// {
         split($1, p, "/"); c = p[1]; r[c] += $2; rm[c] += $3; l[c] += $8; lm[c] += $9
       }
       END {
         for (c in r) {
           printf "%-10s lines %6d, %5.1f%% covered; regions %6d, %5.1f%% covered\n",
             c, l[c], 100 * (l[c] - lm[c]) / l[c], r[c], 100 * (r[c] - rm[c]) / r[c]
           tl += l[c]; tlm += lm[c]; tr += r[c]; trm += rm[c]
         }
         printf "%-10s lines %6d, %5.1f%% covered; regions %6d, %5.1f%% covered\n",
           "all", tl, 100 * (tl - tlm) / tl, tr, 100 * (tr - trm) / tr
       }'
