#!/usr/bin/env python3
"""Marks every function declared in include/tapegrad.h with TG_API (idempotent). The shared
library is built with hidden visibility, so an unmarked declaration would not be exported; run
this after adding a function to the header (CI's symbols check fails until you do)."""
import re, sys
path = sys.argv[1] if len(sys.argv) > 1 else 'include/tapegrad.h'
src = open(path).read().split('\n')
out = []
decl = re.compile(r'^(?!typedef|#|/|\s|}|extern|TG_API)[A-Za-z_][\w \*]*\b(tg_\w+)\(')
for line in src:
    if decl.match(line):
        line = 'TG_API ' + line
    out.append(line)
open(path, 'w').write('\n'.join(out))
