"""Where the CPU goes: per-process CPU time from /proc, grouped by component.

A process's own time plus that of its reaped children is counted, so short-lived
sandbox runs show up under the sandbox server that forked them. Processes that
ended during the window (none of ours should) are missed; the machine-wide busy
time is reported next to the sum so that a gap would show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessTimes:
    command: str
    cpu_seconds: float


def _read_processes() -> dict[int, ProcessTimes]:
    processes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat_file:
                stat = stat_file.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline_file:
                command = cmdline_file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # utime, stime, cutime, cstime (fields 14-17 of proc(5), counted from 1).
        ticks = sum(int(value) for value in fields[11:15])
        processes[int(entry)] = ProcessTimes(command or f"[{name}]", ticks / CLOCK_TICKS)
    return processes


def _machine_busy_seconds() -> float:
    with open("/proc/stat") as stat_file:
        values = [int(value) for value in stat_file.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


COMPONENTS = (
    ("sandbox (fork server, runs)", "fmuengine.sandbox"),
    ("web (gunicorn)", "gunicorn"),
    ("worker (celery)", "celery"),
    ("postgres", "postgres"),
    ("redis", "redis-server"),
    ("load generator (this bench)", "-m bench"),
    ("kernel threads", "[k"),
)


def component_of(command: str) -> str:
    for label, marker in COMPONENTS:
        if marker in command:
            return label
    return "other"


class CpuWindow:
    """CPU seconds per component between start() and stop()."""

    def start(self) -> None:
        self._before = _read_processes()
        self._busy_before = _machine_busy_seconds()

    def stop(self) -> None:
        after = _read_processes()
        self.machine_busy = _machine_busy_seconds() - self._busy_before
        self.by_component: dict[str, float] = {}
        self.other_commands: dict[str, float] = {}
        for pid, times in after.items():
            previous = self._before.get(pid)
            used = times.cpu_seconds - (previous.cpu_seconds if previous else 0.0)
            if used > 0:
                label = component_of(times.command)
                self.by_component[label] = self.by_component.get(label, 0.0) + used
                if label == "other":
                    command = times.command[:60]
                    self.other_commands[command] = self.other_commands.get(command, 0.0) + used

    def report_lines(self, runs: int, unit: str = "run") -> list[str]:
        busy = self.machine_busy / runs * 1000
        lines = [f"      machine busy {busy:6.1f} ms CPU per {unit}, of it:"]
        for label, seconds in sorted(self.by_component.items(), key=lambda item: -item[1]):
            if seconds / runs >= 0.0005:
                lines.append(f"        {label:30s} {seconds / runs * 1000:6.1f} ms")
        others = sorted(self.other_commands.items(), key=lambda item: -item[1])[:3]
        for command, seconds in others:
            if seconds / runs >= 0.0005:
                lines.append(f"          other: {command} {seconds / runs * 1000:6.1f} ms")
        return lines
