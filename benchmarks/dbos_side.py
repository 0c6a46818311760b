"""The DBOS side of `python -m benchmarks.workflows`, run in DBOS's own virtual environment (a
separate process: DBOS pins its own dependencies). DBOS Transact on SQLite, its default: a
`@DBOS.workflow` calling `@DBOS.step`s. Prints one JSON object.

    python benchmarks/dbos_side.py <data folder> <steps> <rounds> <sequential> <at once>
"""

import json
import statistics
import sys
import time

from dbos import DBOS

folder, steps, rounds, sequential, at_once = sys.argv[1], *map(int, sys.argv[2:6])
DBOS(config={"name": "bench", "system_database_url": f"sqlite:///{folder}/dbos.sqlite", "log_level": "WARNING"})


@DBOS.step()
def one_step(i: int) -> int:
    return i


@DBOS.workflow()
def many(n: int) -> int:
    total = 0
    for i in range(n):
        total += one_step(i)
    return total


@DBOS.workflow()
def single() -> int:
    return one_step(1)


DBOS.launch()
many(1)
per_step = []
for _ in range(rounds):
    started = time.perf_counter()
    assert many(steps) == steps * (steps - 1) // 2
    per_step.append((time.perf_counter() - started) * 1000 / steps)
each = []
for _ in range(sequential):
    started = time.perf_counter()
    assert single() == 1
    each.append((time.perf_counter() - started) * 1000)
started = time.perf_counter()
handles = [DBOS.start_workflow(single) for _ in range(at_once)]
assert all(handle.get_result() == 1 for handle in handles)
rate = at_once / (time.perf_counter() - started)
print(json.dumps({
    "msPerStepP50": round(statistics.median(per_step), 3),
    "oneStepMsP50": round(statistics.median(each), 2), "oneStepMsMean": round(statistics.mean(each), 2),
    "instancesPerSecond": round(rate, 1),
}))
DBOS.destroy()
