#!/usr/bin/env python3
# Splits the samples of a `perf script -F comm,ip,sym` dump (recorded with --call-graph dwarf)
# under one frame: what share of all samples has FRAME on its stack, and which frames
# (DEPTH of them, inlined std frames skipped) come right below it.
#
#   perf script -i perf.data -F comm,ip,sym > perf.script
#   python3 fold.py perf.script 'writer::finish::{{closure}}' 1
import sys, collections, re
# fold perf script output into stacks (root..leaf)
stacks=[]; cur=[]
for line in open(sys.argv[1]):
    line=line.rstrip('\n')
    if not line.strip():
        if cur: stacks.append(cur[::-1]); cur=[]
        continue
    if line[0] not in ' \t':
        continue
    parts=line.strip().split(' ',1)
    sym=parts[1] if len(parts)>1 else '?'
    sym=re.sub(r'\+0x[0-9a-f]+$','',sym)
    cur.append(sym)
if cur: stacks.append(cur[::-1])
focus=sys.argv[2]; depth=int(sys.argv[3]) if len(sys.argv)>3 else 1
tot=len(stacks); c=collections.Counter(); n=0
for s in stacks:
    idx=[i for i,f in enumerate(s) if focus in f]
    if not idx: continue
    n+=1
    i=idx[-1]
    # next meaningful frames after focus, skipping inlined-noise
    rest=[f for f in s[i+1:] if '(inlined)' not in f or 'soilmon' in f]
    key=' > '.join(f[:90] for f in rest[:depth]) or '(self)'
    c[key]+=1
print(f"total {tot} samples, {n} under {focus} ({100*n/tot:.1f}%)")
for k,v in c.most_common(40): print(f"{100*v/tot:6.2f}% {k}")
