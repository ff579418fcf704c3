#!/usr/bin/env python3
# For the samples of a `perf script -F comm,ip,sym` dump that have FRAME on their stack: the
# nearest frame above it that matches the regular expression CALLER, and its share of all
# samples (which code made the system calls, say).
#
#   python3 callers.py perf.script do_syscall_64 '^(soilmon::|tokio_postgres::)'
import sys, collections, re
stacks=[]; cur=[]
for line in open(sys.argv[1]):
    line=line.rstrip('\n')
    if not line.strip():
        if cur: stacks.append(cur[::-1]); cur=[]
        continue
    if line[0] not in ' \t': continue
    parts=line.strip().split(' ',1)
    sym=re.sub(r'\+0x[0-9a-f]+$','',parts[1] if len(parts)>1 else '?')
    cur.append(sym)
if cur: stacks.append(cur[::-1])
focus=sys.argv[2]; pat=re.compile(sys.argv[3]); tot=len(stacks); c=collections.Counter()
for s in stacks:
    idx=[i for i,f in enumerate(s) if focus in f]
    if not idx: continue
    i=idx[0]
    up=[f for f in s[:i] if pat.search(f)]
    c[up[-1][:120] if up else '?']+=1
for k,v in c.most_common(15): print(f"{100*v/tot:6.2f}% {k}")
