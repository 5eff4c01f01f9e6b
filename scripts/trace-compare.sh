#!/usr/bin/env bash
# Proves that a change alters no behaviour: builds the `synchrony` binary of two commits
# and compares the simulator's traces, byte for byte, over the same seeds of every profile.
#
#   scripts/trace-compare.sh BASE [HEAD] [SEEDS] [PROFILES...]
#
# BASE and HEAD are git revisions (HEAD defaults to the working tree: "WORKTREE"); SEEDS is
# how many seeds per profile, from 0 (default 200); PROFILES default to every profile. Each
# binary is built in a worktree of its own under target/compare (registry crates are built
# once and shared). For every (profile, seed) the trace's SHA-256 is compared; a mismatch
# prints the first lines that differ. Ends with "N traces identical, M differ" and exits 1
# if any differ.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
base=${1:?usage: scripts/trace-compare.sh BASE [HEAD] [SEEDS] [PROFILES...]}
head=${2:-WORKTREE}
seeds=${3:-200}
shift $(( $# < 3 ? $# : 3 ))
profiles=${*:-calm lossy churn partition leader-crash pause deaf chaos corked batched total-failure}
jobs=${JOBS:-$(nproc)}
work="$root/target/compare"
mkdir -p "$work"
export CARGO_TARGET_DIR="$work/target"

# Builds the binary of revision $1 and prints its path.
build() {
  local rev=$1 dir bin
  if [ "$rev" = WORKTREE ]; then
    # A copy, so that builds during the comparison do not change what is compared.
    cargo build --release -q -p synchrony-cli --target-dir "$root/target" >&2
    mkdir -p "$work/bin"; cp "$root/target/release/synchrony" "$work/bin/synchrony-worktree"
    echo "$work/bin/synchrony-worktree"; return
  fi
  local sha; sha=$(git rev-parse --short=12 "$rev")
  bin="$work/bin/synchrony-$sha"
  if [ ! -x "$bin" ]; then
    dir="$work/tree-$sha"
    [ -d "$dir" ] || git worktree add --detach -q "$dir" "$sha"
    (cd "$dir" && cargo build --release -q -p synchrony-cli >&2)
    mkdir -p "$work/bin"; cp "$CARGO_TARGET_DIR/release/synchrony" "$bin"
    git worktree remove --force "$dir"
  fi
  echo "$bin"
}

a=$(build "$base"); b=$(build "$head")
echo "comparing $base ($a) with $head ($b): seeds 0..$((seeds-1)) of: $profiles"
out="$work/run-$$"; mkdir -p "$out"; trap 'rm -rf "$out"' EXIT

# Prints "profile seed sha256" of one run's trace.
one() {
  local bin=$1 p=$2 s=$3 f
  f=$(mktemp -p "$out")
  "$bin" sim --seed "$s" --profile "$p" --trace-out "$f" >/dev/null 2>&1 || true
  echo "$p $s $(sha256sum < "$f" | cut -c1-64)"
  rm -f "$f"
}
export -f one; export out
# The sums of a built commit are kept (target/compare/sums-*), so a base is run once.
for side in a b; do
  bin=${!side}
  cache="$work/sums-$(basename "$bin")-$seeds-$(echo "$profiles" | tr ' ' '_')"
  if [ "$bin" != "$work/bin/synchrony-worktree" ] && [ -s "$cache" ]; then
    cp "$cache" "$out/$side.sums"; continue
  fi
  for p in $profiles; do for s in $(seq 0 $((seeds-1))); do echo "$bin $p $s"; done; done \
    | xargs -P "$jobs" -n 3 bash -c 'one "$0" "$1" "$2"' | sort > "$out/$side.sums"
  [ "$bin" = "$work/bin/synchrony-worktree" ] || cp "$out/$side.sums" "$cache"
done
same=0; differ=0
while read -r p s ha && read -r _ _ hb <&3; do
  if [ "$ha" = "$hb" ]; then same=$((same+1)); continue; fi
  differ=$((differ+1))
  if [ "$differ" -le 5 ]; then
    echo "DIFFER: --profile $p --seed $s"
    "$a" sim --seed "$s" --profile "$p" --trace-out "$out/ta" >/dev/null 2>&1 || true
    "$b" sim --seed "$s" --profile "$p" --trace-out "$out/tb" >/dev/null 2>&1 || true
    diff "$out/ta" "$out/tb" | head -6 || true
  fi
done < "$out/a.sums" 3< "$out/b.sums"
echo "$same traces identical, $differ differ"
[ "$differ" -eq 0 ]
