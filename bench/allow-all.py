#!/usr/bin/env python3
# Allows every value, one process per STORE (kind = "process").
print("JNHP:1")
