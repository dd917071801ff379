#!/usr/bin/env python3
# Allows every value as a persistent helper written with jnhp.helper
# (python/), to compare with the hand-written allow-all-helper.py.
import jnhp.helper


def check(name: bytes, value: bytes) -> bool:
    return True


jnhp.helper.run(check)
