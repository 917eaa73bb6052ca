# What the gdb and LLDB commands for Spindle's fibers share (docs/debugging.md): reading
# `spindle_debug_info`, walking each job system's list of fiber states, describing a fiber, and
# where a suspended fiber's registers were saved. The front ends (Scripts/gdb/spindle.py,
# Scripts/lldb/spindle.py) supply a `Process`: the table's fields and raw memory reads.

import shutil
import struct
import subprocess

LAYOUT_VERSION = 1
PHASES = ["running", "spare", "parking", "parked", "ready", "finished"]
PRIORITIES = ["high", "normal", "low"]
SUSPENDED = 2  # spindle_fiber_state: SPINDLE_FIBER_SUSPENDED
# struct spindle_fiber (CSpindle.h): `sp` at 0; `state` after `sp`, `exclusivity[2]`, `kind`.
FIBER_SP = 0
FIBER_STATE = 28
FIELDS = ["fiber_control", "fiber_phase", "fiber_priority", "fiber_job", "fiber_waited",
          "fiber_worker", "fiber_next", "counter_word"]


class Process:
    """What a front end provides: `info` (field name -> int, plus `heads` and `slot_used` as
    lists of ints) and `read(address, size)` -> bytes."""

    def __init__(self, info, read):
        if info.get("version") != LAYOUT_VERSION:
            raise ValueError("spindle_debug_info version %s, this script reads %d" % (info.get("version"), LAYOUT_VERSION))
        self.info = info
        self.read = read

    def word(self, address):
        return struct.unpack("<Q", self.read(address, 8))[0]

    def u32(self, address):
        return struct.unpack("<I", self.read(address, 4))[0]

    def byte(self, address):
        return self.read(address, 1)[0]


def fibers(process):
    """Every fiber state of every live job system, as (system slot, address) pairs."""
    found = []
    nxt = process.info["fiber_next"]
    for slot, head in enumerate(process.info["heads"]):
        if not process.info["slot_used"][slot]:
            continue
        node, steps = head, 0
        while node != 0 and steps < 10_000_000:
            found.append((slot, node))
            node = process.word(node + nxt)
            steps += 1
    return found


def describe(process, slot, state):
    """The fields of one fiber state, as a dict."""
    info = process.info
    control = process.word(state + info["fiber_control"])
    phase = process.byte(state + info["fiber_phase"])
    priority = process.byte(state + info["fiber_priority"])
    job = process.word(state + info["fiber_job"])
    waited = process.word(state + info["fiber_waited"])

    def pending(counter):
        return process.word(counter + info["counter_word"]) & ((1 << 40) - 1) if counter else None

    return {
        "system": slot, "state": state, "control": control,
        "phase": PHASES[phase] if phase < len(PHASES) else "?%d" % phase,
        "priority": PRIORITIES[priority] if priority < len(PRIORITIES) else "?%d" % priority,
        "job": job, "job_pending": pending(job),
        "waited": waited, "waited_pending": pending(waited),
        "worker": process.word(state + info["fiber_worker"]),
        "sp": process.word(control + FIBER_SP), "context_state": process.u32(control + FIBER_STATE),
    }


def rows(process):
    return [describe(process, slot, state) for slot, state in fibers(process)]


def _counter(address, value):
    return "0x%x (%d pending)" % (address, value) if address else "-"


def listing(rows):
    """The text of `spindle fibers`."""
    lines = ["%d fiber(s)" % len(rows)]
    for index, row in enumerate(rows):
        detail = ""
        if row["phase"] != "spare":
            detail = "  job %s  waits for %s" % (
                _counter(row["job"], row["job_pending"]),
                _counter(row["waited"], row["waited_pending"]) if row["phase"] in ("parked", "parking") else "-")
        lines.append("#%-3d system %d  %-8s %-6s  fiber 0x%x  worker 0x%x%s"
                     % (index, row["system"], row["phase"], row["priority"], row["state"], row["worker"], detail))
    return "\n".join(lines)


def chosen(rows, argument):
    """The fiber indices `spindle bt` / `spindle switch` name: N, or `all` (parked and ready)."""
    argument = argument.strip()
    if argument == "all":
        return [i for i, row in enumerate(rows) if row["phase"] in ("parked", "ready")]
    try:
        index = int(argument)
    except ValueError:
        raise ValueError("usage: spindle bt N | spindle bt all (N from `spindle fibers`)")
    if not 0 <= index < len(rows):
        raise ValueError("no fiber #%s (%d fibers)" % (argument, len(rows)))
    return [index]


def saved_registers(process, row):
    """The (rbp, rsp, rip) a suspended fiber resumes with, or None if it is not suspended.

    spindle_context_swap (switch.S) saved 16 bytes of FPU/SSE control, r15, r14, r13, r12, rbx,
    rbp and the return address at `sp`; resuming pops them."""
    if row["context_state"] != SUSPENDED or not row["sp"]:
        return None
    sp = row["sp"]
    return process.word(sp + 56), sp + 72, process.word(sp + 64)


def demangled(text):
    """`text` with Swift's mangled names demangled by `swift demangle` (from the toolchain), or
    unchanged when the toolchain is not on PATH."""
    tool = shutil.which("swift-demangle")
    command = [tool, "--simplified"] if tool else (["swift", "demangle", "--simplified"] if shutil.which("swift") else None)
    if command is None:
        return text
    try:
        return subprocess.run(command, input=text, capture_output=True, text=True, timeout=30).stdout or text
    except (OSError, subprocess.SubprocessError):
        return text
