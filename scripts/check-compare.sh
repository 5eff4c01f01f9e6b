#!/usr/bin/env bash
# Proves that a change to the checker alters no verdict: runs `synchrony check --quiescent`
# of two binaries over simulated traces and over mutants of them (a delivery dropped,
# doubled, moved to another view or swapped with the next, a view's members rotated, a view
# or state dropped), and compares what each prints (sorted) and its exit code.
#
#   scripts/check-compare.sh OLD_BINARY NEW_BINARY [MUTANTS_PER_TRACE]
#
# Ends with "N outputs identical, M differ (K traces with violations)"; exits 1 if any differ.
set -euo pipefail
old=${1:?usage: scripts/check-compare.sh OLD_BINARY NEW_BINARY [MUTANTS_PER_TRACE]}
new=${2:?usage: scripts/check-compare.sh OLD_BINARY NEW_BINARY [MUTANTS_PER_TRACE]}
per=${3:-25}
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
for p in chaos churn calm lossy; do for s in 11 12; do
  "$new" sim --seed "$s" --profile "$p" --trace-out "$dir/base-$p-$s.jsonl" >/dev/null || true
done; done
"$new" sim --seed 3 --profile total-failure --trace-out "$dir/base-tf-3.jsonl" >/dev/null || true
python3 - "$dir" "$per" <<'PY'
import json, random, glob, sys
d, per = sys.argv[1], int(sys.argv[2])
random.seed(7)
n = 0
for b in sorted(glob.glob(d + '/base-*.jsonl')):
    evs = [json.loads(l) for l in open(b).read().splitlines()]
    for k in range(per):
        e = [dict(x) for x in evs]
        idx = [i for i, x in enumerate(e) if x['ev'] == 'deliver']
        kind = k % 6
        if kind == 0 and idx:
            del e[random.choice(idx)]
        elif kind == 1 and idx:
            i = random.choice(idx)
            later = [j for j in idx if e[j]['p'] == e[i]['p'] and j > i]
            if later:
                j = later[0]
                e[i]['i'], e[j]['i'] = e[j]['i'], e[i]['i']
        elif kind == 2 and idx:
            x = dict(e[random.choice(idx)])
            x['i'] = max(y['i'] for y in e if y['p'] == x['p']) + 1
            e.append(x)
        elif kind == 3:
            v = [i for i, x in enumerate(e) if x['ev'] == 'view' and len(x['members']) > 1]
            if v:
                i = random.choice(v)
                e[i]['members'] = e[i]['members'][1:] + e[i]['members'][:1]
        elif kind == 4:
            v = [i for i, x in enumerate(e) if x['ev'] in ('state', 'view')]
            if v:
                del e[random.choice(v)]
        elif kind == 5 and idx:
            i = random.choice(idx)
            e[i]['view'] = e[i]['view'] + 1
        with open('%s/m%04d.jsonl' % (d, n), 'w') as f:
            for x in e:
                f.write(json.dumps(x, separators=(',', ':')) + '\n')
        n += 1
PY
same=0; differ=0; bad=0
for f in "$dir"/*.jsonl; do
  a=$("$old" check --quiescent "$f" 2>&1 | sort; echo "rc=${PIPESTATUS[0]}")
  b=$("$new" check --quiescent "$f" 2>&1 | sort; echo "rc=${PIPESTATUS[0]}")
  if [ "$a" = "$b" ]; then same=$((same+1)); else differ=$((differ+1)); echo "DIFFER: $(basename "$f")"; fi
  if [[ $a == *violated* ]]; then bad=$((bad+1)); fi
done
echo "$same outputs identical, $differ differ ($bad traces with violations)"
[ "$differ" -eq 0 ]
