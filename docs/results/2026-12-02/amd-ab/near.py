"""Pairs of A/B runs (ab.sh's A<i>/ and B<i>/ dirs): each pair's whole-run rates (a * marks a run
whose larger probe was 150 ns or more), their ratio B/A, and the median ratio of the pairs
whose two runs both probed near."""
import json,statistics,sys
d=sys.argv[1]; n=int(sys.argv[2])
rs=[];allr=[]
for i in range(1,n+1):
    a=json.loads(open(f"{d}/A{i}/samples.jsonl").readline())["sample"]; b=json.loads(open(f"{d}/B{i}/samples.jsonl").readline())["sample"]
    na=max(a["probe_ns"],a["probe_after_ns"])<150; nb=max(b["probe_ns"],b["probe_after_ns"])<150
    print(i, f"{a['pps']/1e6:.1f}{'' if na else '*'} {b['pps']/1e6:.1f}{'' if nb else '*'} {b['pps']/a['pps']:.3f}")
    allr.append(b['pps']/a['pps'])
    if na and nb: rs.append(b['pps']/a['pps'])
print("pairs with both runs' probes under 150 ns:", len(rs), "median ratio", round(statistics.median(rs),3) if rs else None, "; all pairs:", round(statistics.median(allr),3))
