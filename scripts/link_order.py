#!/usr/bin/env python3
"""The function order for the linker, from callgrind profiles of a training run.

  link_order.py PROFILE... > order.txt

Every function that ran goes in, hottest first: those of the first profile (the
requests) by the instructions they cost, then those only the next profiles ran
(start-up), in the order given. lld packs them in that order at the start of the text
section (`--symbol-ordering-file`), so the pages a running proxy touches are few and
shared by the hot paths. Names are the symbols' mangled names (valgrind
--demangle=no), as the linker knows them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'loadtests' / 'bench'))
from callgrind_top import load  # noqa: E402


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    seen = set()
    for path in sys.argv[1:]:
        profile, _ = load(path)
        for name, cost in profile.most_common():
            # Names without a symbol (a bare address) cannot be placed.
            if cost > 0 and name not in seen and not name.startswith('0x'):
                seen.add(name)
                print(name)


if __name__ == '__main__':
    main()
