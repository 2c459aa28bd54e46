"""Run ``sanic APP ...`` with every Python bytecode instruction counted (``sys.settrace``
with opcode events), for bench/hot_path_ops.py.

Counting starts at the first SIGUSR1 (start-up is not counted, and runs at full speed); on
each SIGUSR1 it writes what it counted since the last one to ``$OPCOUNT_OUT`` (JSON: the
totals, and instructions and calls per function) and starts again from zero. Counting is
paused while it writes, so the report does not count itself.

    OPCOUNT_OUT=/tmp/counts.jsonl python bench/_opcount.py service.app --single-process ...
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
from types import CodeType, FrameType
from typing import Any

_ops: collections.Counter[CodeType] = collections.Counter()
_calls: collections.Counter[CodeType] = collections.Counter()
_paused = [False]


def _count_ops(frame: FrameType, event: str, arg: Any) -> Any:
    if event == "opcode" and not _paused[0]:
        _ops[frame.f_code] += 1
    return _count_ops


def _count_call(frame: FrameType, event: str, arg: Any) -> Any:
    frame.f_trace_opcodes = True
    frame.f_trace_lines = False
    if not _paused[0]:
        _calls[frame.f_code] += 1
    return _count_ops


def _name(code: CodeType) -> str:
    where = code.co_filename.split("site-packages/")[-1].split(os.getcwd() + "/")[-1]
    return f"{code.co_qualname} ({where}:{code.co_firstlineno})"


def _report(signum: int, frame: FrameType | None) -> None:
    _paused[0] = True
    try:
        functions = {_name(code): [count, _calls[code]] for code, count in _ops.most_common(200)}
        document = {
            "opcodes": sum(_ops.values()),
            "calls": sum(_calls.values()),
            "functions": functions,
        }
        with open(os.environ["OPCOUNT_OUT"], "a") as out:
            out.write(json.dumps(document) + "\n")
        _ops.clear()
        _calls.clear()
    finally:
        _paused[0] = False
    sys.settrace(_count_call)  # from the first report on: every frame this thread starts


def main() -> None:
    signal.signal(signal.SIGUSR1, _report)
    sys.argv = ["sanic", *sys.argv[1:]]
    from sanic.__main__ import main as sanic_main

    sanic_main()


if __name__ == "__main__":
    main()
