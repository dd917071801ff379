#!/usr/bin/env python3
# Allows every value as a persistent helper (kind = "helper").
import sys

out = sys.stdout.buffer
for line in sys.stdin.buffer:
    out.write(line.split(b" ", 1)[0] + b" JNHP:1\n")
    out.flush()
