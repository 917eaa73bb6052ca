# gdb commands for Spindle's fibers (docs/debugging.md).
#
#   (gdb) source Scripts/gdb/spindle.py
#   (gdb) spindle fibers          list every fiber of every job system: state, priority, the
#                                 counter of its job and the counter it waits for
#   (gdb) spindle bt N            the backtrace of fiber N (a suspended one: parked, ready, spare)
#   (gdb) spindle bt all          the backtraces of every suspended fiber that runs or waits in a job
#
# Works on a live, stopped process (the backtrace borrows the selected thread's registers for
# the fiber and puts them back). The layout comes from the process itself
# (`spindle_debug_info`, written by Spindle), so the script does not depend on Swift's type
# layouts or on Swift support in gdb.

import shutil
import struct
import subprocess

import gdb

LAYOUT_VERSION = 1
PHASES = ["running", "spare", "parking", "parked", "ready", "finished"]
PRIORITIES = ["high", "normal", "low"]
SUSPENDED = 2  # spindle_fiber_state: SPINDLE_FIBER_SUSPENDED


def _read(address, size):
    return bytes(gdb.selected_inferior().read_memory(address, size))


def _word(address):
    return struct.unpack("<Q", _read(address, 8))[0]


def _byte(address):
    return _read(address, 1)[0]


def _info():
    try:
        info = gdb.parse_and_eval("spindle_debug_info")
    except gdb.error:
        raise gdb.GdbError("spindle: no spindle_debug_info in this program (is it linked with Spindle?)")
    if int(info["version"]) != LAYOUT_VERSION:
        raise gdb.GdbError("spindle: spindle_debug_info version %d, this script reads %d"
                           % (int(info["version"]), LAYOUT_VERSION))
    return info


def fibers():
    """Every fiber state of every live job system, as (system slot, address) pairs."""
    info = _info()
    nxt = int(info["fiber_next"])
    found = []
    low, high = info["heads"].type.range()
    for slot in range(low, high + 1):
        if int(info["slot_used"][slot]) == 0:
            continue
        node = int(info["heads"][slot])
        steps = 0
        while node != 0 and steps < 10_000_000:
            found.append((slot, node))
            node = _word(node + nxt)
            steps += 1
    return found


def describe(info, slot, state):
    """The fields of one fiber state."""
    control = _word(state + int(info["fiber_control"]))
    phase = _byte(state + int(info["fiber_phase"]))
    priority = _byte(state + int(info["fiber_priority"]))
    job = _word(state + int(info["fiber_job"]))
    waited = _word(state + int(info["fiber_waited"]))
    worker = _word(state + int(info["fiber_worker"]))
    counter_word = int(info["counter_word"])

    def pending(counter):
        return _word(counter + counter_word) & ((1 << 40) - 1) if counter else None

    fiber = gdb.parse_and_eval("*(struct spindle_fiber *)%d" % control)
    return {
        "system": slot, "state": state, "control": control,
        "phase": PHASES[phase] if phase < len(PHASES) else "?%d" % phase,
        "priority": PRIORITIES[priority] if priority < len(PRIORITIES) else "?%d" % priority,
        "job": job, "job_pending": pending(job),
        "waited": waited, "waited_pending": pending(waited),
        "worker": worker, "sp": int(fiber["sp"]), "context_state": int(fiber["state"]),
    }


def _counter(address, value):
    if not address:
        return "-"
    return "0x%x (%d pending)" % (address, value)


class SpindleCommand(gdb.Command):
    """Spindle's fibers: `spindle fibers`, `spindle bt N`, `spindle bt all`."""

    def __init__(self):
        super().__init__("spindle", gdb.COMMAND_USER, prefix=True)


class SpindleFibers(gdb.Command):
    """List every fiber of every job system: state, priority, job counter, awaited counter."""

    def __init__(self):
        super().__init__("spindle fibers", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        info = _info()
        rows = [describe(info, slot, state) for slot, state in fibers()]
        print("%d fiber(s)" % len(rows))
        for index, row in enumerate(rows):
            if row["phase"] == "spare":
                detail = ""
            else:
                detail = "  job %s  waits for %s" % (
                    _counter(row["job"], row["job_pending"]),
                    _counter(row["waited"], row["waited_pending"]) if row["phase"] in ("parked", "parking") else "-")
            print("#%-3d system %d  %-8s %-6s  fiber 0x%x  worker 0x%x%s"
                  % (index, row["system"], row["phase"], row["priority"], row["state"], row["worker"], detail))


class SpindleBacktrace(gdb.Command):
    """The backtrace of suspended fiber N (`spindle bt N`), or of every one (`spindle bt all`)."""

    def __init__(self):
        super().__init__("spindle bt", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        info = _info()
        rows = [describe(info, slot, state) for slot, state in fibers()]
        argument = argument.strip()
        if argument == "all":
            chosen = [i for i, row in enumerate(rows) if row["phase"] in ("parked", "ready")]
        else:
            try:
                chosen = [int(argument)]
            except ValueError:
                raise gdb.GdbError("usage: spindle bt N | spindle bt all (N from `spindle fibers`)")
            if not 0 <= chosen[0] < len(rows):
                raise gdb.GdbError("spindle: no fiber #%s (%d fibers)" % (argument, len(rows)))
        for index in chosen:
            row = rows[index]
            print("fiber #%d (%s, %s):" % (index, row["phase"], row["priority"]))
            if row["context_state"] != SUSPENDED or not row["sp"]:
                print("  not suspended (it runs on a thread now: see `thread apply all bt`)")
                continue
            _backtrace(row["sp"])


def _backtrace(sp):
    # spindle_context_swap (switch.S) saved 16 bytes of FPU/SSE control, r15, r14, r13, r12, rbx,
    # rbp and the return address at `sp`; resuming pops them.
    rbp = _word(sp + 56)
    rip = _word(sp + 64)
    rsp = sp + 72
    gdb.execute("frame 0", to_string=True)
    saved = {name: int(gdb.parse_and_eval("$" + name)) for name in ("rip", "rsp", "rbp")}
    try:
        gdb.execute("set $rbp = %d" % rbp)
        gdb.execute("set $rsp = %d" % rsp)
        gdb.execute("set $pc = %d" % rip)
        print(_demangled(gdb.execute("bt", to_string=True)), end="")
    finally:
        gdb.execute("set $rbp = %d" % saved["rbp"])
        gdb.execute("set $rsp = %d" % saved["rsp"])
        gdb.execute("set $pc = %d" % saved["rip"])


def _demangled(text):
    # gdb prints Swift's mangled names; `swift demangle` (from the toolchain) reads them.
    tool = shutil.which("swift-demangle")
    command = [tool, "--simplified"] if tool else (["swift", "demangle", "--simplified"] if shutil.which("swift") else None)
    if command is None:
        return text
    try:
        return subprocess.run(command, input=text, capture_output=True, text=True, timeout=30).stdout or text
    except (OSError, subprocess.SubprocessError):
        return text


SpindleCommand()
SpindleFibers()
SpindleBacktrace()
