"""The example helper in the repository's validators/ ($JNHP_VALIDATORS)."""

import os
import sys
from pathlib import Path

import pytest

import jnhp


def test_the_python_helper_example(jnhpd_factory):
    where = os.environ.get("JNHP_VALIDATORS")
    if not where:
        pytest.skip("$JNHP_VALIDATORS is not set (tests/python.rs sets it)")
    script = Path(where) / "python-helper"
    server = jnhpd_factory(
        f'[[validator]]\nkind = "helper"\ncommand = ["{sys.executable}", "{script}"]\n'
    )
    client = jnhp.Client(server.addr)
    assert client.store("a", "fine") is True
    assert client.store("b", "a forbidden word") is False
