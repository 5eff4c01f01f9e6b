#!/usr/bin/env bash
# Mutation check by hand: break the engine on purpose, one way at a time, and see whether
# the tests notice. Each mutant is a literal text substitution in one source file (it must
# match exactly once); the file is restored after every run (and on exit), so no break stays
# in the tree.
#
#   scripts/mutants.sh [SEEDS_PER_PROFILE]     the simulated suite: SEEDS seeds (default 30)
#                                              of each profile until one fails
#   MODE=engine scripts/mutants.sh             the engine crate's own tests alone
#                                              (cargo test -p synchrony-engine)
#
# Prints one line per mutant (caught or MISSED, with the first violation or failing test
# seen) and a closing "N caught, M missed".
set -uo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-30}
profiles="calm lossy churn partition leader-crash chaos"
caught=0; missed=0
src=crates/synchrony-engine/src
backup=$(mktemp -d)
cp "$src"/*.rs "$backup"/
restore() { cp "$backup"/*.rs "$src"/; }
trap restore EXIT

# name @@ file @@ text to find @@ replacement
mutants=$(cat <<'LIST'
causal-on-arrival @@ group.rs @@         if msg.order.is_causal() { @@         if false && msg.order.is_causal() {
total-without-sequencer @@ group.rs @@             if er as usize != r || es != msg.seq { @@             if false && (er as usize != r || es != msg.seq) {
safe-without-stability @@ group.rs @@ let uniform = (msg.order == Order::Safe || msg.relayed) && !self.cut_mode; @@ let uniform = msg.relayed && !self.cut_mode;
skip-the-flush @@ group.rs @@         self.cut_mode = true; @@         self.cut_mode = true; return 0;
no-freeze-on-prepare @@ engine.rs @@                     gs.frozen = Some(p.epoch); @@                     let _ = p.epoch;
minority-installs-views @@ gms.rs @@         2 * w > total && w >= min_commit as u64 @@         w > 0
joiner-not-held-for-state @@ engine.rs @@             self.events.gate(g); @@             let _ = g;
no-causal-pruning-in-cut @@ cut.rs @@                             hi[r] = seq - 1; @@                             let _ = seq;
cut-order-from-zero @@ cut.rs @@         let base = self.reports.iter().map(|r| r.delivered_total).min().unwrap_or(0); @@         let base = 0;
takeover-ignores-accepted @@ gms.rs @@         let prior = promises @@         let prior = None::<(Ballot, Arc<Decision>)>; let _ = promises
no-acks-while-running @@ group.rs @@                 self.ack_dirty[rank] = true; @@                 let _ = rank;
stable-with-one-ack @@ group.rs @@ .map(|j| v[j]).min(); @@ .map(|j| v[j]).max();
cross-group-no-wait @@ causal.rs @@                 needs.retain(|n| !met(n)); @@                 needs.clear();
cross-group-no-barrier @@ engine.rs @@ (*pepoch > self.shown_epoch() || self.barrier.contains(&key)) @@ false
cross-group-acks-unshown @@ group.rs @@                     delivered: self.shown[r], @@                     delivered: self.streams[r].delivered,
LIST
)

# Applies one substitution; fails unless the text occurs exactly once.
mutate() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys
path, find, repl = sys.argv[1:4]
s = open(path).read()
n = s.count(find)
if n != 1:
    print(f"pattern found {n} times (the code moved: update scripts/mutants.sh)")
    sys.exit(1)
open(path, "w").write(s.replace(find, repl))
PY
}

while IFS= read -r line; do
  [ -z "$line" ] && continue
  name=$(echo "$line" | awk -F' @@ ' '{print $1}')
  file=$(echo "$line" | awk -F' @@ ' '{print $2}')
  find=$(echo "$line" | awk -F' @@ ' '{print $3}')
  replace=$(echo "$line" | awk -F' @@ ' '{print $4}')
  restore
  if ! why=$(mutate "$src/$file" "$find" "$replace"); then
    echo "$name: $why"; missed=$((missed+1)); continue
  fi
  verdict="MISSED"; why=""
  if [ "${MODE:-sim}" = engine ]; then
    out=$(timeout 180 cargo test --release -q -p synchrony-engine 2>&1); rc=$?
    if echo "$out" | grep -q "could not compile"; then
      echo "$name: does not compile (not counted)"; continue
    fi
    if [ $rc -eq 124 ]; then
      verdict="caught"; why="the tests did not finish in 180 s (a test hangs)"
    elif echo "$out" | grep -qE "test result: FAILED|panicked"; then
      verdict="caught"; why="$(echo "$out" | grep -m1 -E '^test .* FAILED|panicked' | cut -c1-100)"
    fi
  else
    if ! cargo build --release -q -p synchrony-cli 2>/dev/null; then
      echo "$name: does not compile (not counted)"; continue
    fi
    for p in $profiles; do
      out=$(timeout 300 ./target/release/synchrony sim --seeds "$seeds" --start 500 --profile "$p" 2>&1); rc=$?
      if [ $rc -eq 124 ]; then
        verdict="caught"; why="$p: the simulation did not finish in 300 s (a hang)"; break
      fi
      if ! echo "$out" | grep -q " 0 failed"; then
        verdict="caught"; why="$p: $(echo "$out" | grep -m1 -E 'violated|anomalies|panicked' | sed 's/^ *//' | cut -c1-90)"; break
      fi
    done
  fi
  echo "$name: $verdict ${why}"
  if [ "$verdict" = caught ]; then caught=$((caught+1)); else missed=$((missed+1)); fi
done <<< "$mutants"
restore
[ "${MODE:-sim}" = engine ] || cargo build --release -q -p synchrony-cli 2>/dev/null
echo "$caught caught, $missed missed"
