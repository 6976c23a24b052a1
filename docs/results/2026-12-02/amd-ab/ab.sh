#!/bin/bash
# usage: ab.sh A B pairs design size dir [extra...]
A=$1; B=$2; N=$3; D=$4; S=$5; X=$6; shift 6
out=/tmp/ab/out.$$; mkdir -p $out
for i in $(seq 1 $N); do
  for w in A B; do
    bin=$A; [ $w = B ] && bin=$B
    $bin compare --designs $D --sizes $S --dirs $X --rounds 1 --seconds 1.5 --cost model:250,187,378,377,161 --no-stream "$@" --out $out/$w$i >/dev/null 2>&1
    r=$(sed -n 2p $out/$w$i/results.csv | cut -d, -f7,13,14)
    eval "r$w=\$r"
  done
  pa=${rA%%,*}; pb=${rB%%,*}
  echo "$i A=$rA B=$rB ratio=$(python3 -c "print(round($pb/$pa,3))")"
done
