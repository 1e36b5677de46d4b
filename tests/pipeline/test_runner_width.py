"""The in-process runner runs as many tasks at once as ``width`` asks (readers sized from the
measured model rate), never more than one per core, and keeps every result."""

import os
import threading
import time

from pipeline.runner import Runner
from pipeline.settings import RunnerSettings


def test_width_bounds_the_tasks_running_at_once():
    lock = threading.Lock()
    state = {"now": 0, "most": 0, "width": 1}
    seen = []

    def task(i):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return i

    def width():
        return state["width"]

    with Runner(RunnerSettings(workers=0), tasks=40) as runner:
        for result in runner.map(task, ((i,) for i in range(40)), progress=False, width=width):
            seen.append(result)
            if len(seen) == 10:
                assert state["most"] == 1  # one reader while width says one
                state["width"] = 64  # asks for more than the cores
    assert sorted(seen) == list(range(40))
    assert 2 <= state["most"] <= max(2, os.cpu_count() or 1)  # and grew when asked
