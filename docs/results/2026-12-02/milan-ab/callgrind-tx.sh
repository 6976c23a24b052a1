#!/bin/sh
# usage: run.sh NAME [size]  -- callgrind of TX ring:8:greedy with current release build
set -e
N=$1; S=${2:-64}
rm -rf /tmp/cg/$N && mkdir -p /tmp/cg/$N && cp /work/main/target/release/experiments /tmp/cg/$N/
cd /tmp/cg/$N
valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=/tmp/cg/$N/cg.%p ./experiments compare --designs ring:8:greedy --sizes $S --dirs tx --rounds 1 --seconds 3 --cost model:250,187,378,377,161 --no-stream --out /tmp/cg/$N/out > log 2>&1
D=$(python3 -c "import csv;r=list(csv.DictReader(open('out/results.csv')));print(r[0]['delivered'])")
for f in cg.*; do
  role=$(grep -m1 '^cmd:' $f | grep -o 'role-[a-z]*' || true)
  [ -n "$role" ] || continue
  t=$(grep -m1 'totals:' $f | awk '{print $2}')
  echo "$role $(python3 -c "print(round($t/$D,1))") per packet (delivered $D)"
done
