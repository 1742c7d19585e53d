"""An ordered process pool for the per-image work of builders and predict (NumPy, cv2, dlib).

Nothing here imports TensorFlow or JAX, so spawned workers start in about a
second: they import this module, numpy, cv2 and dlib only.
"""
import multiprocessing
import os
import sys
import threading
from typing import Callable, Iterable, Iterator

import cv2

from data_prep import landmarks


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _worker_init() -> None:
    landmarks.load_models()  # once per worker, not once per task


def ordered_map(fn: Callable, items: Iterable, workers: int, chunksize: int = 8,
                max_in_flight: int = 512) -> Iterator:
    """fn over items in worker processes, results in input order (like map).

    workers <= 1 runs in this process. Forked workers (where available) skip
    re-importing TensorFlow; they only run numpy / cv2 / dlib code. At most
    `max_in_flight` items are queued, so results never pile up in memory.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    # Fork is fast, but not under JAX (fer_jax.main building a dataset): JAX's
    # runtime threads make forked children liable to deadlock, so spawn there.
    fork = "fork" in multiprocessing.get_all_start_methods() and "jax" not in sys.modules
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    if fork:
        # Load dlib here once: forked workers share it, instead of each loading
        # it again (~1 s per worker and per split).
        _worker_init()
    max_in_flight = max(max_in_flight, 2 * chunksize * workers)
    slots = threading.Semaphore(max_in_flight)
    stop = threading.Event()

    def feed():
        for item in items:
            while not slots.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            yield item

    # Forked children inherit cv2's thread-pool state but not its threads: any
    # cv2 call that touches the pool would then wait forever. With one cv2
    # thread while forking, the children run cv2 serially (one process per core
    # already) and never touch a pool; this process gets its threads back after.
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        pool = ctx.Pool(workers, initializer=_worker_init)
    finally:
        cv2.setNumThreads(cv2_threads)
    try:
        for result in pool.imap(fn, feed(), chunksize):
            slots.release()
            yield result
        pool.close()
    finally:
        stop.set()
        pool.terminate()
        pool.join()
