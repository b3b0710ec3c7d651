"""Host memory settings: large blocks come from the heap and stay there once freed."""

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from cnn_cases.kernels import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB)

# Allocates and frees one large block with glibc's malloc and reports what glibc's own
# accounting (mallinfo2) saw; the settings are process-wide, so each case is a process.
PROBE = f"""
import ctypes, json, os
from cnn_cases.kernels import host_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
applied = host_memory.keep_freed_memory()
before = libc.mallinfo2()
block = libc.malloc({BLOCK})
ctypes.memset(block, 1, {BLOCK})
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
os.environ["MALLOC_ARENA_MAX"] = "4"  # too late: the first answer stands
print(json.dumps({{
    "applied": applied,
    "again": host_memory.keep_freed_memory(),
    "mmapped": during.hblkhd - before.hblkhd,
    "heap_grew": during.arena - before.arena,
    "heap_after_free": after.arena - before.arena,
    "free_in_heap": after.fordblks,
}}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE)],
        env={**clean, "PYTHONPATH": ROOT, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="glibc 2.33 or later",
)


@glibc
def test_a_freed_large_block_stays_in_the_heap_for_the_next_step():
    got = _probe()
    assert got["applied"] and got["again"]
    assert got["mmapped"] == 0  # no fresh mapping to fault in and zero again
    assert got["heap_grew"] >= BLOCK
    assert got["heap_after_free"] >= BLOCK  # not trimmed back to the system
    assert got["free_in_heap"] >= BLOCK  # there for the next allocation


@glibc
def test_a_malloc_variable_of_the_process_leaves_glibc_as_it_is():
    got = _probe(MALLOC_ARENA_MAX="8")
    assert not got["applied"] and not got["again"]
    assert got["mmapped"] >= BLOCK  # glibc's default: a block this large is its own mapping
    assert got["heap_after_free"] < BLOCK


def test_off_linux_nothing_is_applied(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert host_memory.keep_freed_memory() is False
    monkeypatch.setattr(sys, "platform", "linux")
    assert host_memory.keep_freed_memory() is False  # the first answer is kept


def test_a_libc_without_mallopt_is_not_glibc(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setattr(sys, "platform", "linux")
    for key in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())
    assert host_memory.keep_freed_memory() is False


def test_a_refused_setting_is_reported(monkeypatch):
    calls = []

    def mallopt(param, value):
        calls.append((param, value))
        return param != -4  # M_MMAP_MAX refused

    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setattr(sys, "platform", "linux")
    for key in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: types.SimpleNamespace(mallopt=mallopt))
    assert host_memory.keep_freed_memory() is False
    assert calls[:2] == [(-8, 1), (-4, 0)]  # one arena, then no mmap; stops at the refusal
