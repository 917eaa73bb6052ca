# gdb commands for Spindle's fibers (docs/debugging.md).
#
#   (gdb) source Scripts/gdb/spindle.py
#   (gdb) spindle fibers          list every fiber of every job system: state, priority, the
#                                 counter of its job and the counter it waits for
#   (gdb) spindle bt N            the backtrace of fiber N (a suspended one: parked, ready, spare)
#   (gdb) spindle bt all          the backtraces of every parked and ready fiber
#   (gdb) spindle switch N        make the selected thread show fiber N's stack (`bt`, `frame`,
#                                 `info locals` then read the fiber) until `spindle switch back`
#   (gdb) spindle switch back     give the thread its own registers back (do this before
#                                 continuing the program)
#
# Works on a live, stopped process (the fiber borrows the selected thread's registers). The
# layout comes from the process itself (`spindle_debug_info`, written by Spindle), so the script
# does not depend on Swift's type layouts or on Swift support in gdb. The reading is shared with
# the LLDB script (Scripts/debugger/spindle_fibers.py).

import os
import sys

import gdb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "debugger"))
import spindle_fibers  # noqa: E402

_switched = None  # the thread's own (rip, rsp, rbp) while a fiber borrows it


def _process():
    try:
        value = gdb.parse_and_eval("spindle_debug_info")
    except gdb.error:
        raise gdb.GdbError("spindle: no spindle_debug_info in this program (is it linked with Spindle?)")
    info = {name: int(value[name]) for name in ["version"] + spindle_fibers.FIELDS}
    low, high = value["heads"].type.range()
    info["heads"] = [int(value["heads"][i]) for i in range(low, high + 1)]
    info["slot_used"] = [int(value["slot_used"][i]) for i in range(low, high + 1)]
    inferior = gdb.selected_inferior()
    try:
        return spindle_fibers.Process(info, lambda address, size: bytes(inferior.read_memory(address, size)))
    except ValueError as error:
        raise gdb.GdbError("spindle: %s" % error)


def _chosen(rows, argument):
    try:
        return spindle_fibers.chosen(rows, argument)
    except ValueError as error:
        raise gdb.GdbError("spindle: %s" % error)


def _registers():
    return {name: int(gdb.parse_and_eval("$" + name)) for name in ("rip", "rsp", "rbp")}


def _set_registers(rip, rsp, rbp):
    gdb.execute("set $rbp = %d" % rbp)
    gdb.execute("set $rsp = %d" % rsp)
    gdb.execute("set $pc = %d" % rip)


class SpindleCommand(gdb.Command):
    """Spindle's fibers: `spindle fibers`, `spindle bt N|all`, `spindle switch N|back`."""

    def __init__(self):
        super().__init__("spindle", gdb.COMMAND_USER, prefix=True)


class SpindleFibers(gdb.Command):
    """List every fiber of every job system: state, priority, job counter, awaited counter."""

    def __init__(self):
        super().__init__("spindle fibers", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        print(spindle_fibers.listing(spindle_fibers.rows(_process())))


class SpindleBacktrace(gdb.Command):
    """The backtrace of suspended fiber N (`spindle bt N`), or of every one (`spindle bt all`)."""

    def __init__(self):
        super().__init__("spindle bt", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        if _switched is not None:
            raise gdb.GdbError("spindle: a fiber is switched in; `spindle switch back` first")
        process = _process()
        rows = spindle_fibers.rows(process)
        for index in _chosen(rows, argument):
            row = rows[index]
            print("fiber #%d (%s, %s):" % (index, row["phase"], row["priority"]))
            saved = spindle_fibers.saved_registers(process, row)
            if saved is None:
                print("  not suspended (it runs on a thread now: see `thread apply all bt`)")
                continue
            rbp, rsp, rip = saved
            gdb.execute("frame 0", to_string=True)
            own = _registers()
            try:
                _set_registers(rip, rsp, rbp)
                print(spindle_fibers.demangled(gdb.execute("bt", to_string=True)), end="")
            finally:
                _set_registers(own["rip"], own["rsp"], own["rbp"])


class SpindleSwitch(gdb.Command):
    """`spindle switch N`: the selected thread shows fiber N's stack; `spindle switch back`."""

    def __init__(self):
        super().__init__("spindle switch", gdb.COMMAND_USER)

    def invoke(self, argument, from_tty):
        global _switched
        if argument.strip() == "back":
            if _switched is None:
                raise gdb.GdbError("spindle: no fiber is switched in")
            gdb.execute("frame 0", to_string=True)
            _set_registers(*_switched)
            _switched = None
            print("the thread's own registers are back")
            return
        process = _process()
        rows = spindle_fibers.rows(process)
        index = _chosen(rows, argument)
        if len(index) != 1:
            raise gdb.GdbError("usage: spindle switch N | spindle switch back")
        row = rows[index[0]]
        saved = spindle_fibers.saved_registers(process, row)
        if saved is None:
            raise gdb.GdbError("spindle: fiber #%d is not suspended (it runs on a thread: `thread apply all bt`)" % index[0])
        gdb.execute("frame 0", to_string=True)
        if _switched is None:
            own = _registers()
            _switched = (own["rip"], own["rsp"], own["rbp"])
        rbp, rsp, rip = saved
        _set_registers(rip, rsp, rbp)
        print("fiber #%d (%s, %s) is switched in: `bt`, `frame N`, `info locals`; "
              "`spindle switch back` before continuing" % (index[0], row["phase"], row["priority"]))


SpindleCommand()
SpindleFibers()
SpindleBacktrace()
SpindleSwitch()
