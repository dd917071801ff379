#!/bin/sh
# Allows every value: measures the cost of a process per STORE.
echo JNHP:1
