# LLDB commands for Spindle's fibers (docs/debugging.md): the same as the gdb script's.
#
#   (lldb) command script import Scripts/lldb/spindle.py
#   (lldb) spindle fibers          list every fiber of every job system: state, priority, the
#                                  counter of its job and the counter it waits for
#   (lldb) spindle bt N            the backtrace of fiber N (a suspended one: parked, ready, spare)
#   (lldb) spindle bt all          the backtraces of every parked and ready fiber
#   (lldb) spindle switch N        make the selected thread show fiber N's stack (`bt`,
#                                  `frame select`, `frame variable` then read the fiber)
#   (lldb) spindle switch back     give the thread its own registers back (do this before
#                                  continuing the program)
#
# Works on a live, stopped process, x86-64. The layout comes from the process itself
# (`spindle_debug_info`), so any LLDB reads it, with or without Swift support (Debian's lldb-16
# has none; `spindle bt` demangles through `swift demangle`). Shared with the gdb script:
# Scripts/debugger/spindle_fibers.py.

import os
import sys

import lldb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "debugger"))
import spindle_fibers  # noqa: E402

_switched = {}  # thread index id -> its own (rip, rsp, rbp) while a fiber borrows it


class SpindleError(Exception):
    pass


def _process(debugger):
    target = debugger.GetSelectedTarget()
    process = target.GetProcess()
    if not process.IsValid() or process.GetState() != lldb.eStateStopped:
        raise SpindleError("the process is not stopped")
    value = target.FindFirstGlobalVariable("spindle_debug_info")
    if not value.IsValid():
        raise SpindleError("no spindle_debug_info in this program (is it linked with Spindle?)")

    def field(name):
        return value.GetChildMemberWithName(name).GetValueAsUnsigned()

    def array(name):
        member = value.GetChildMemberWithName(name)
        return [member.GetChildAtIndex(i).GetValueAsUnsigned() for i in range(member.GetNumChildren())]

    info = {name: field(name) for name in ["version"] + spindle_fibers.FIELDS}
    info["heads"] = array("heads")
    info["slot_used"] = array("slot_used")

    def read(address, size):
        error = lldb.SBError()
        data = process.ReadMemory(address, size, error)
        if error.Fail():
            raise SpindleError("cannot read 0x%x: %s" % (address, error.GetCString()))
        return data

    try:
        return spindle_fibers.Process(info, read)
    except ValueError as error:
        raise SpindleError(str(error))


def _run(debugger, command):
    result = lldb.SBCommandReturnObject()
    debugger.GetCommandInterpreter().HandleCommand(command, result)
    if not result.Succeeded():
        raise SpindleError("`%s` failed: %s" % (command, result.GetError().strip()))
    return result.GetOutput()


def _registers(debugger):
    frame = debugger.GetSelectedTarget().GetProcess().GetSelectedThread().GetFrameAtIndex(0)
    return tuple(frame.FindRegister(name).GetValueAsUnsigned() for name in ("rip", "rsp", "rbp"))


def _set_registers(debugger, rip, rsp, rbp):
    # `register write` on frame 0 also drops LLDB's cached frames of the thread.
    _run(debugger, "frame select 0")
    _run(debugger, "register write rbp 0x%x" % rbp)
    _run(debugger, "register write rsp 0x%x" % rsp)
    _run(debugger, "register write rip 0x%x" % rip)


def _thread_id(debugger):
    return debugger.GetSelectedTarget().GetProcess().GetSelectedThread().GetIndexID()


def _command(function):
    def wrapper(debugger, command, result, internal_dict):
        try:
            text = function(debugger, command)
            if text:
                result.AppendMessage(text)
        except (SpindleError, ValueError) as error:
            result.SetError("spindle: %s" % error)
    wrapper.__doc__ = function.__doc__
    return wrapper


@_command
def fibers(debugger, command):
    """List every fiber of every job system: state, priority, job counter, awaited counter."""
    return spindle_fibers.listing(spindle_fibers.rows(_process(debugger)))


@_command
def backtrace(debugger, command):
    """The backtrace of suspended fiber N (`spindle bt N`), or of every one (`spindle bt all`)."""
    if _thread_id(debugger) in _switched:
        raise SpindleError("a fiber is switched in; `spindle switch back` first")
    process = _process(debugger)
    rows = spindle_fibers.rows(process)
    lines = []
    for index in spindle_fibers.chosen(rows, command):
        row = rows[index]
        lines.append("fiber #%d (%s, %s):" % (index, row["phase"], row["priority"]))
        saved = spindle_fibers.saved_registers(process, row)
        if saved is None:
            lines.append("  not suspended (it runs on a thread now: see `bt all`)")
            continue
        rbp, rsp, rip = saved
        own = _registers(debugger)
        try:
            _set_registers(debugger, rip, rsp, rbp)
            lines.append(spindle_fibers.demangled(_run(debugger, "thread backtrace")).rstrip())
        finally:
            _set_registers(debugger, *own)
    return "\n".join(lines)


@_command
def switch(debugger, command):
    """`spindle switch N`: the selected thread shows fiber N's stack; `spindle switch back`."""
    thread = _thread_id(debugger)
    if command.strip() == "back":
        if thread not in _switched:
            raise SpindleError("no fiber is switched in on this thread")
        _set_registers(debugger, *_switched.pop(thread))
        return "the thread's own registers are back"
    process = _process(debugger)
    rows = spindle_fibers.rows(process)
    chosen = spindle_fibers.chosen(rows, command)
    if len(chosen) != 1:
        raise SpindleError("usage: spindle switch N | spindle switch back")
    row = rows[chosen[0]]
    saved = spindle_fibers.saved_registers(process, row)
    if saved is None:
        raise SpindleError("fiber #%d is not suspended (it runs on a thread: `bt all`)" % chosen[0])
    if thread not in _switched:
        _switched[thread] = _registers(debugger)
    rbp, rsp, rip = saved
    _set_registers(debugger, rip, rsp, rbp)
    return ("fiber #%d (%s, %s) is switched in: `bt`, `frame select N`, `frame variable`; "
            "`spindle switch back` before continuing" % (chosen[0], row["phase"], row["priority"]))


def __lldb_init_module(debugger, internal_dict):
    module = __name__
    debugger.HandleCommand('command container add -h "Spindle\'s fibers (docs/debugging.md)" spindle')
    debugger.HandleCommand("command script add -f %s.fibers spindle fibers" % module)
    debugger.HandleCommand("command script add -f %s.backtrace spindle bt" % module)
    debugger.HandleCommand("command script add -f %s.switch spindle switch" % module)
