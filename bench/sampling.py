"""Profiles of a worker under load: py-spy records one (native frames), ``summarize`` prints
its top own-time and inclusive entries with the samples of waiting threads left out."""

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(.*) \((?:.*/)?([^/:]*)(?::\d+)?\)$")


def _frame(text: str) -> str:
    """``function (file.py)``, the line number and folder dropped."""
    found = _FRAME.match(text)
    return f"{found.group(1)} ({found.group(2)})" if found else text


# Frames of a thread that waits (a lock, the GIL, the event loop's poll): not CPU.
_WAITING = ("PyThread_acquire_lock_timed", "take_gil", "epoll_wait", "epoll_pwait", "poll (",
            "select (", "sem_timedwait", "pthread_cond_wait", "pthread_cond_timedwait")


def summarize(raw: Path, top: int = 25) -> str:
    """Top functions of a py-spy raw (collapsed) profile, waiting samples left out: own
    samples (the leaf frame) and inclusive samples (anywhere on the stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        if any(marker in stack for marker in _WAITING):
            continue
        frames = [_frame(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    total = max(total, 1)
    lines = [f"  {total} busy samples; own time:"]
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def record_profile(pid: int, seconds: float, out: Path) -> "subprocess.Popen[bytes]":
    """py-spy sampling ``pid`` (native frames) for about ``seconds`` into ``out`` (raw)."""
    spy = str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([spy, "record", "--native", "--rate", "1000", "--duration",
                             str(max(int(seconds) - 1, 1)), "--format", "raw", "-o", str(out),
                             "-p", str(pid)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
