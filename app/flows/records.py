"""What an execution keeps of its tasks: one record per task, stored as a checkpoint of the run.

A flow execution is a run of kind `flow` (`app/engine/queue.py`). Each task that ends is
written to the run's checkpoints (`job_step`) before the next one starts, so an execution that
is interrupted — a crash, a restart, a sleep, an approval — picks up after its last completed
task, and no completed task runs twice. Checkpoint names:

- `task:<key>`: a task that is done (SUCCESS, SKIPPED, or FAILED with allowFailure): its record.
- `fail:<key>`: the task that failed the execution (a retry of the execution runs it again).
- `flow:failed`: the execution failed (or timed out): its `errors` and `finally` tasks run next.
- `sleep:<key>` {until}, `approval:<key>` {id}, `subflow:<key>` {executionId}: what a waiting
  task started, so that waking it does not start it again.
- `decision:<approval id>`: an approval's decision, written by whoever decided.

A task's key is its name (names are unique in a flow), with the iteration it belongs to in a
loop: `each[2].save` is task `save` of the third iteration of `each`.
"""

from __future__ import annotations

from typing import Any

import msgspec

DONE = "task:"
FAILED = "fail:"
FLOW_FAILED = "flow:failed"
ERRORS_PREFIX = "errors/"
FINALLY_PREFIX = "finally/"


class TaskRecord(msgspec.Struct, omit_defaults=True):
    """One task of an execution, as stored and shown."""

    task: str  # its name
    type: str  # its plugin id
    status: str  # RUNNING, WAITING, SUCCESS, FAILED, SKIPPED, CANCELLED
    key: str  # its name, with its loop iteration (see the module's docstring)
    order: int = 0  # its place in the flow's document order
    outputs: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    started_at: int | None = None
    finished_at: int | None = None


_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(TaskRecord).decode


def encode(record: TaskRecord) -> str:
    return _encode(record).decode()


def decode(text: str | bytes) -> TaskRecord:
    return _decode_record(text)


def records(steps: dict[str, str]) -> list[TaskRecord]:
    """The task records among a run's checkpoints (name -> JSON text), in document order."""
    found = [decode(text) for name, text in steps.items() if name.startswith((DONE, FAILED))]
    found.sort(key=lambda record: (record.order, record.started_at or 0))
    return found
