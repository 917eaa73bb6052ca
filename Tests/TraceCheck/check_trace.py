#!/usr/bin/env python3
"""Checks a Chrome/Perfetto JSON trace written by Spindle (JobTrace.write(toFile:)).

Usage: check_trace.py TRACE.json [SLICE_NAME ...]

Checks what Perfetto's JSON importer relies on: a top-level object with a "traceEvents" array;
every event has a string "ph", integer "pid" and "tid", and (except metadata) a numeric "ts";
complete events ("X") have a non-negative "dur" and nest properly on their track; every flow
start ("s") has a finish ("f") with the same id; each worker track is named. Every SLICE_NAME
given must name at least one complete event. Exits 1 with a message on the first failure.
"""
import json
import sys
from collections import defaultdict


def fail(message):
    print(f"check_trace: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) < 2:
        fail("usage: check_trace.py TRACE.json [SLICE_NAME ...]")
    with open(sys.argv[1], encoding="utf-8") as handle:
        root = json.load(handle)
    if not isinstance(root, dict) or not isinstance(root.get("traceEvents"), list):
        fail("the top level must be an object with a traceEvents array")
    events = root["traceEvents"]
    tracks = defaultdict(list)
    named = set()
    flows = defaultdict(set)
    for index, event in enumerate(events):
        ph = event.get("ph")
        if not isinstance(ph, str):
            fail(f"event {index} has no phase: {event}")
        if not isinstance(event.get("pid"), int) or not isinstance(event.get("tid"), int):
            fail(f"event {index} needs integer pid and tid: {event}")
        if ph == "M":
            if event.get("name") == "thread_name":
                named.add(event["tid"])
            continue
        if not isinstance(event.get("ts"), (int, float)) or event["ts"] < 0:
            fail(f"event {index} needs a non-negative numeric ts: {event}")
        if not isinstance(event.get("name"), str):
            fail(f"event {index} needs a string name: {event}")
        if ph == "X":
            duration = event.get("dur")
            if not isinstance(duration, (int, float)) or duration < 0:
                fail(f"complete event {index} needs a non-negative dur: {event}")
            start = round(event["ts"] * 1000)
            tracks[event["tid"]].append((start, start + round(duration * 1000), event["name"]))
        elif ph in ("s", "f"):
            flows[event.get("id")].add(ph)
        elif ph != "i":
            fail(f"event {index} has an unexpected phase {ph!r}")
    for tid, spans in tracks.items():
        if tid not in named:
            fail(f"track {tid} has slices but no thread_name")
        spans.sort(key=lambda span: (span[0], -span[1]))
        open_ends = []
        for start, end, name in spans:
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            if open_ends and end > open_ends[-1]:
                fail(f"track {tid}: slice {name!r} [{start}, {end}] ns overlaps its enclosing slice without nesting")
            open_ends.append(end)
    for flow_id, phases in flows.items():
        if phases != {"s", "f"}:
            fail(f"flow {flow_id} has {sorted(phases)} instead of a start and a finish")
    names = {span[2] for spans in tracks.values() for span in spans}
    missing = [name for name in sys.argv[2:] if name not in names]
    if missing:
        fail(f"no slices named {missing} (slices: {sorted(names)})")
    slices = sum(len(spans) for spans in tracks.values())
    print(f"check_trace: {len(events)} events, {slices} slices on {len(tracks)} tracks, {len(flows)} flows: valid")


main()
