"""glibc malloc thresholds set by the CLI: applied, can be turned off, and they stop the page
faults of repeatedly allocated large blocks (what a 3D network's activations are)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from semiseg.allocator import MALLOPT, tune_allocator

REPO_SRC = os.path.join(os.path.dirname(__file__), os.pardir, "src")
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# allocate a 64 MB tensor, write every page, free it: 10 times to settle, then 10 times counting
# the minor page faults (torch's CPU allocator is malloc; numpy's large arrays use huge pages,
# which hide the effect)
_PROBE = """
import resource, sys
if sys.argv[1] == "tuned":
    from semiseg.allocator import tune_allocator
    assert all(tune_allocator().values())
import torch
for _ in range(10):
    a = torch.ones(2**24)
    del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = torch.ones(2**24)
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "SEMISEG_MALLOC"}
    env["PYTHONPATH"] = REPO_SRC
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip())


@glibc
def test_large_blocks_are_reused_instead_of_mapped_again():
    plain, tuned = _faults("plain"), _faults("tuned")
    # plain: each 64 MB block is mmapped afresh, 16384 faults of 4 KiB pages each time
    assert plain > 10 * 16000
    # tuned: the freed block stays in the heap and the next one reuses its pages
    assert tuned < 16000, (plain, tuned)


@glibc
def test_tune_allocator_sets_every_threshold_and_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SEMISEG_MALLOC", "off")
    assert tune_allocator() == {}
    monkeypatch.delenv("SEMISEG_MALLOC")
    assert tune_allocator() == {name: True for name in MALLOPT}
