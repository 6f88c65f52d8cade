"""Whether a call holds the GIL: the longest time a pure-Python loop could not run while the
call ran on another thread. Shared by the shaping tests and ``benchmarks/bench_shaping.py``."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable


def longest_stall(call: Callable[[], object]) -> tuple[float, float]:
    """While ``call`` runs on another thread, the longest time a pure-Python loop in this
    thread could not run, and how long the call took (seconds). A call holding the GIL stalls
    the loop for all of its length, whatever the load."""
    window: list[float] = []
    started = threading.Event()

    def worker() -> None:
        started.set()
        window.append(time.perf_counter())
        call()
        window.append(time.perf_counter())

    ticks: list[float] = []
    thread = threading.Thread(target=worker)
    thread.start()
    started.wait()
    while thread.is_alive():
        ticks.append(time.perf_counter())
        for _ in range(100):
            pass
    thread.join()
    begin, end = window
    inside = [begin, *(t for t in ticks if begin < t < end), end]
    return max(b - a for a, b in itertools.pairwise(inside)), end - begin
