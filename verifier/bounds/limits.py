"""What stops a bound computation: its deadline (``Interrupted``) and the memory budget it
keeps to (docs/design-notes.md: Memory budget).

A run's budget is a cap on the memory it may hold: the process's resident memory on CPU
(what the kernel's OOM killer counts), the bytes torch has allocated on a CUDA device.  It
is ambient, like ``torch.no_grad``: ``with within(budget):`` around a run, and the code that
allocates in proportion to a problem's size reads it:

- ``row_chunk`` sizes the backward passes' row chunks to the room left, so CROWN's
  intermediate bounds of a wide node take several small passes, not one big one;
- ``check_memory`` (called between nodes and between chunks) raises ``MemoryExceeded`` once usage
  is over the cap.  It is an ``Interrupted``: alpha-CROWN keeps its best bound so far (every
  iterate is sound) and drops to optimising the final rows alone, branch-and-bound halves
  its batch of domains, and what cannot shrink ends as ``unknown`` naming the budget, never
  as a process killed for memory.

Without a budget in force nothing is checked and passes use the default chunk.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_UNITS = {"": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}


class Interrupted(Exception):
    """The deadline passed, the run was cancelled, or the memory budget was reached in the
    middle of a bound computation."""


class MemoryExceeded(Interrupted):
    """A bound computation reached the memory budget (usage and cap in bytes)."""

    def __init__(self, used: int, limit: int):
        super().__init__(f"memory budget of {format_bytes(limit)} reached "
                         f"({format_bytes(used)} in use)")
        self.used, self.limit = used, limit


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def parse_bytes(text: str | int | float) -> int:
    """``"8G"``, ``"512MiB"``, ``"1.5g"`` or a number of bytes, as bytes (> 0)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
        if m is None:
            raise ValueError(f"memory size {text!r}: expected a number of bytes or a number "
                             "with a unit K, M, G or T (e.g. 8G, 512MiB)")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if not value > 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return int(value)


def resident_bytes() -> int:
    """This process's resident memory (Linux /proc; elsewhere torch's own count is all we
    can see, 0 on CPU)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def total_memory(device: torch.device) -> int:
    """What the device has: a CUDA device's memory; on CPU the machine's memory or the
    cgroup's limit when that is lower."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


DEFAULT_FRACTION = {"cpu": 0.6, "cuda": 0.85}


def default_limit(device: torch.device) -> int:
    """The budget when none is given: 60% of the machine's memory on CPU (the rest for the
    service, other workers and the allocator's slack), 85% of a GPU's."""
    return int(DEFAULT_FRACTION.get(device.type, 0.6) * total_memory(device))


# a computation stops at this share of what the budget lets it add to the usage it found
# (its baseline): usage is read between allocations, so the rest is headroom for the
# allocation in flight when the line is crossed
HIGH_WATER = 0.9
# seconds between two readings of usage (a reading costs about 15 us; a few ms of
# allocation fit in the headroom)
READ_EVERY = 0.002


@dataclass
class MemoryBudget:
    """A cap in bytes on ``device``'s memory in use, and the times it was reached: usage over
    the baseline (usage when the budget was made) plus ``HIGH_WATER`` of the room above it."""

    limit: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reached: int = 0  # how many times check() raised
    baseline: int | None = None  # usage when made (read then when not given)
    _next_read: float = 0.0

    def __post_init__(self) -> None:
        if self.baseline is None:
            self.baseline = min(self.used(), self.limit)

    @classmethod
    def default(cls, device: torch.device | str = "cpu") -> MemoryBudget:
        device = torch.device(device)
        return cls(default_limit(device), device)

    def used(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.memory_allocated(self.device))
        return resident_bytes()

    @property
    def line(self) -> int:
        base = self.baseline or 0
        return base + int(HIGH_WATER * (self.limit - base))

    def room(self) -> int:
        return max(0, self.line - self.used())

    def check(self) -> None:
        now = time.perf_counter()
        if now < self._next_read:
            return
        self._next_read = now + READ_EVERY
        used = self.used()
        if used > self.line and self.device.type != "cuda":
            release_freed()  # freed memory the C allocator kept counts as resident
            used = self.used()
        if used > self.line:
            self.reached += 1
            self._next_read = 0.0  # over the line: the next check reads again
            raise MemoryExceeded(used, self.limit)


def release_freed() -> None:
    """Hand memory that was freed but kept by the C allocator back to the system (glibc's
    ``malloc_trim``; nothing elsewhere), so resident memory counts what is in use."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_active: ContextVar[MemoryBudget | None] = ContextVar("nnverify_memory_budget", default=None)


@contextlib.contextmanager
def within(budget: MemoryBudget | None) -> Iterator[MemoryBudget | None]:
    """Run the block under ``budget`` (None: no budget)."""
    token = _active.set(budget)
    try:
        yield budget
    finally:
        _active.reset(token)


def active() -> MemoryBudget | None:
    return _active.get()


def check_memory() -> None:
    """Raise MemoryExceeded when a budget is in force and usage is over it."""
    budget = _active.get()
    if budget is not None:
        budget.check()


# of the room left, the share one chunk's pass may take (the rest: what the pass keeps
# from earlier chunks, results, and the allocator's slack)
CHUNK_SHARE = 0.25


def row_chunk(bytes_per_row: Callable[[], int], default: int) -> int:
    """Rows per backward pass: ``default``, fewer when the budget's room left cannot hold
    that many rows of ``bytes_per_row()`` each (at least 1; asked only under a budget)."""
    budget = _active.get()
    if budget is None:
        return default
    fit = int(CHUNK_SHARE * budget.room()) // max(1, bytes_per_row())
    return max(1, min(default, fit))
