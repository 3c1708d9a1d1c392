#!/usr/bin/env bash
# The long form of the incremental-maintenance oracle (tests/api/differential.rs, whose fast form runs
# in every `cargo test`): more seeds, longer sequences. Each seed writes at random (every kind of write,
# transactions left open across applies, TRUNCATE, renumbered companies), interleaves applies and
# rebuilds, and checks every read model against its definition (EXCEPT ALL both ways).
#
# Usage: reliability/differential.sh [SEEDS=300] [STEPS=300] [FIRST_SEED=1000]
# A failure prints the seed and the operations; rerun one seed with SEEDS=1 and FIRST_SEED=<seed>.
set -euo pipefail
cd "$(dirname "$0")/.."
export DIFFERENTIAL_SEEDS="${1:-300}" DIFFERENTIAL_STEPS="${2:-300}" DIFFERENTIAL_FIRST_SEED="${3:-1000}"
echo "differential: seeds ${DIFFERENTIAL_FIRST_SEED}..$((DIFFERENTIAL_FIRST_SEED + DIFFERENTIAL_SEEDS - 1)), ${DIFFERENTIAL_STEPS} steps each"
started=$(date +%s)
cargo test --test api differential -- --nocapture
echo "differential: passed in $(( $(date +%s) - started )) s"
