#!/usr/bin/env python3
"""Per-request costs from a callgrind profile kept by instructions.sh (KEEP=dir).

callgrind_annotate 3.19 puts every instruction's self cost on `clone` for these
profiles (it trips over Rust's inlined-frame file records), so this reads the file
itself.
  callgrind_top.py PROFILE [REQUESTS]               # self cost per function, top 60
  callgrind_top.py PROFILE REQUESTS --callers REGEX # who calls the matching functions
  callgrind_top.py PROFILE REQUESTS --inclusive REGEX
Figures are instructions per request (REQUESTS defaults to 2000, as instructions.sh).
Large copies go through `rep movsb`, which callgrind counts once per byte: memcpy's
figure is about the bytes copied, and costs the CPU far less than that many instructions.
"""
import collections
import re
import sys


def load(path):
    names = {}

    def name(kind, value):
        m = re.match(r'\((\d+)\)(?: (.*))?', value)
        if not m:
            return value
        key = (kind, m.group(1))
        if m.group(2) is not None:
            names[key] = m.group(2)
        return names.get(key, value)

    own = collections.Counter()
    edges = collections.Counter()
    fn = cfn = None
    after_calls = False
    with open(path, errors='replace') as f:
        for line in f:
            line = line.rstrip('\n')
            if line.startswith('fn='):
                fn = name('fn', line[3:])
            elif line.startswith('cfn='):
                cfn = name('fn', line[4:])
            elif line.startswith(('cfi=', 'cfl=')):
                name('fl', line[4:])
            elif line.startswith(('fl=', 'fi=', 'fe=')):
                name('fl', line[3:])
            elif line.startswith(('ob=', 'cob=')):
                name('ob', line.split('=', 1)[1])
            elif line.startswith('calls='):
                after_calls = True
            elif line and (line[0].isdigit() or line[0] in '+-*'):
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if after_calls:
                    edges[(fn, cfn)] += cost
                    after_calls = False
                else:
                    own[fn] += cost
    return own, edges


def main():
    path = sys.argv[1]
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    own, edges = load(path)
    total = sum(own.values())
    print(f"total {total // requests:,} instructions per request")
    if len(sys.argv) > 4 and sys.argv[3] == '--callers':
        pattern = re.compile(sys.argv[4])
        for (caller, callee), cost in edges.most_common():
            if pattern.search(callee or '') and cost // requests > 10:
                print(f"{cost // requests:>8,}  {caller[:110]}  ->  {callee[:80]}")
    elif len(sys.argv) > 4 and sys.argv[3] == '--inclusive':
        pattern = re.compile(sys.argv[4])
        inclusive = collections.Counter(own)
        for (caller, _), cost in edges.items():
            inclusive[caller] += cost
        for fn, cost in inclusive.most_common():
            if pattern.search(fn or '') and cost // requests > 10:
                print(f"{cost // requests:>8,}  {fn[:150]}")
    else:
        for fn, cost in own.most_common(60):
            print(f"{cost // requests:>8,} {100 * cost / total:5.1f}%  {(fn or '?')[:150]}")


if __name__ == '__main__':
    main()
