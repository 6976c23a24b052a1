"""In-run A/B: phases of PH ms alternate off/on (odd phases on); per adjacent (off,on) pair the
ratio of on-bins' mean rate to off-bins', bins whose centre lies 10 ms or more inside a phase."""
import json,sys,statistics
ph=float(sys.argv[1]); runs=sys.argv[2:]
allr=[]
for d in runs:
    s=json.loads(open(d+"/samples.jsonl").readline())["sample"]
    ph_bins={}
    for b in s["timeline"]:
        c=(b["t"]*1000)-5
        p=int(c//ph); pos=c-p*ph
        if 10<=pos<=ph-10:
            ph_bins.setdefault(p,[]).append(b["packets"]/0.01)
    rs=[]
    for p in sorted(ph_bins):
        if p%2==1 and (p-1) in ph_bins:
            rs.append(statistics.mean(ph_bins[p])/statistics.mean(ph_bins[p-1]))
    allr+=rs
    print(d, "pairs",len(rs),"median on/off",round(statistics.median(rs),3), "pps", round(s["pps"]/1e6,2), "probes", round(s["probe_ns"]), round(s["probe_after_ns"]))
allr.sort()
print("ALL pairs",len(allr),"median",round(statistics.median(allr),3),"quartiles",round(allr[len(allr)//4],3),round(allr[3*len(allr)//4],3))
