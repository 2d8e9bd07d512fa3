"""Scheduling of the handler's own background threads."""

from __future__ import annotations

import os
import threading


def background_priority(thread: threading.Thread | None = None) -> bool:
    """Puts a telemetry thread of the serving process (the calling one by default) in Linux's SCHED_IDLE
    class: it then runs on CPU time that serving leaves over and never preempts a request's thread. At
    saturation the recorder and the exporters otherwise share the two cores with inference;
    bench_handler.py prints the CPU per request and the throughput with telemetry on and off. False where
    the platform has no such class; the thread then keeps its priority. What cannot wait is not left to
    these threads: a scrape and shutdown record what is pending in their own thread, and the bounded
    queues count what they drop (bench_handler.py prints those counts after saturation). The telemetry
    process (telemetry_link.py) shares neither GIL nor thread with serving, and exports at normal
    priority."""
    native_id = threading.get_native_id() if thread is None else thread.native_id
    policy = getattr(os, "SCHED_IDLE", None)
    if native_id is None or policy is None:
        return False
    try:
        os.sched_setscheduler(native_id, policy, os.sched_param(0))
    except OSError:
        return False
    return True
