#!/usr/bin/python3
"""A switched PDU for net-snmp's `pass_persist`, for haconn's SNMP tests and benchmark.

snmpd starts one copy per `pass_persist` line and talks to it on stdin/stdout
(PING/PONG, get, getnext, set). The single argument is a JSON config written by the
test harness (tests/snmp_support/mod.rs):

    log            file to append one line per accepted SET: `<epoch ns> <view> <outlet> <value>`
    outlets        outlets per view (numbered 1..outlets, as in a haconn spec)
    transient_ms   how long a switched outlet stays between states (0: switches at once)
    ibm_firmware   IBM firmware string; one containing "sLEN" moves the outlet column 11 -> 13
    apc_firmware   APC rPDU firmware string

Views (each its own outlet state, all outlets start on), as table rows below:
IBM iPDU, APC rPDU, APC MasterSwitch, Eaton ePDU, Raritan PX2. While an outlet is between
states, views with a transient value show it (IBM cycling = 2, Eaton pendingOff = 2 /
pendingOn = 3); the others keep showing the old state, as the real ones do.
"""

import bisect
import json
import os
import sys
import time

IBM = (1, 3, 6, 1, 4, 1, 2, 6, 223)
APC = (1, 3, 6, 1, 4, 1, 318, 1, 1)
EATON = (1, 3, 6, 1, 4, 1, 534, 6, 6, 6, 1, 2, 2, 1)
RARITAN = (1, 3, 6, 1, 4, 1, 13742, 6, 4, 1, 2, 1)


def view(name, control, status, on, off, first_index, st_on=None, st_off=None,
         pending_on=None, pending_off=None, firmware=None, count=None, accepts=None):
    """One PDU MIB: columns (OID tuples without the index), values, scalars."""
    return {
        "name": name,
        "control": control,
        "status": status,
        "on": on,
        "off": off,
        "st_on": on if st_on is None else st_on,
        "st_off": off if st_off is None else st_off,
        "pending_on": pending_on,
        "pending_off": pending_off,
        "first_index": first_index,
        "firmware": firmware,
        "count": count,
        # Values a SET to the control column accepts (others: wrong-value).
        "accepts": accepts or {on: True, off: False},
    }


def views(cfg):
    ibm_col = 13 if "sLEN" in cfg["ibm_firmware"] else 11
    ibm_out = IBM + (8, 2, 2, 1, ibm_col)
    ms = APC + (4, 4, 2, 1, 3)
    eaton = EATON + (3,)
    return [
        view("ibm", ibm_out, ibm_out, 1, 0, 1, pending_on=2, pending_off=2,
             firmware=(IBM + (7, 3, 0), cfg["ibm_firmware"]), count=IBM + (8, 2, 1, 0)),
        view("apc", APC + (12, 3, 3, 1, 1, 4), APC + (12, 3, 5, 1, 1, 4), 1, 2, 1,
             firmware=(APC + (12, 1, 3, 0), cfg["apc_firmware"]),
             count=APC + (12, 3, 1, 4, 0)),
        view("masterswitch", ms, ms, 1, 2, 1),
        view("eaton", eaton, eaton, 1, 0, 0, pending_on=3, pending_off=2),
        view("raritan", RARITAN + (2, 1), RARITAN + (3, 1), 1, 0, 1, st_on=7, st_off=8),
    ]


class Pdu:
    def __init__(self, cfg):
        self.cfg = cfg
        self.outlets = int(cfg["outlets"])
        self.transient_ns = int(cfg.get("transient_ms", 0)) * 1_000_000
        self.views = views(cfg)
        # (view name, outlet) -> [is_on, target_on, settle_at_ns]
        self.state = {}
        self.cells = {}  # OID tuple -> (kind, view, outlet)
        for v in self.views:
            for n in range(1, self.outlets + 1):
                self.state[(v["name"], n)] = [True, True, 0]
                idx = n - 1 + v["first_index"]
                self.cells[v["control"] + (idx,)] = ("control", v, n)
                if v["status"] != v["control"]:
                    self.cells[v["status"] + (idx,)] = ("status", v, n)
            if v["firmware"]:
                self.cells[v["firmware"][0]] = ("firmware", v, None)
            if v["count"]:
                self.cells[v["count"]] = ("count", v, None)
        self.order = sorted(self.cells)

    def outlet(self, v, n):
        """(is_on, switching) after settling what is due."""
        s = self.state[(v["name"], n)]
        if s[0] != s[1] and time.time_ns() >= s[2]:
            s[0] = s[1]
        return s[0], s[0] != s[1]

    def value(self, oid):
        kind, v, n = self.cells[oid]
        if kind == "firmware":
            return "string", v["firmware"][1]
        if kind == "count":
            return "integer", str(self.outlets)
        is_on, switching = self.outlet(v, n)
        if kind == "control" and v["control"] == v["status"] or kind == "status":
            if switching:
                pending = v["pending_on"] if self.state[(v["name"], n)][1] else v["pending_off"]
                if pending is not None:
                    return "integer", str(pending)
            return "integer", str(v["st_on"] if is_on else v["st_off"])
        # A separate control column reads back the last command.
        target = self.state[(v["name"], n)][1]
        return "integer", str(v["on"] if target else v["off"])

    def set(self, oid, typ, value):
        cell = self.cells.get(oid)
        if cell is None:
            return "not-writable"
        kind, v, n = cell
        if kind != "control":
            return "not-writable"
        if typ != "integer":
            return "wrong-type"
        try:
            val = int(value)
        except ValueError:
            return "wrong-type"
        if val not in v["accepts"]:
            return "wrong-value"
        on = v["accepts"][val]
        s = self.state[(v["name"], n)]
        self.outlet(v, n)
        if s[1] != on:
            s[1] = on
            s[2] = time.time_ns() + self.transient_ns
            if self.transient_ns == 0:
                s[0] = on
        line = "%d %s %d %d\n" % (time.time_ns(), v["name"], n, val)
        fd = os.open(self.cfg["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return "DONE"


def parse_oid(text):
    return tuple(int(p) for p in text.strip().strip(".").split("."))


def dotted(oid):
    return "." + ".".join(str(p) for p in oid)


def main():
    with open(sys.argv[1]) as f:
        pdu = Pdu(json.load(f))
    out = sys.stdout

    def reply(*lines):
        out.write("".join(line + "\n" for line in lines))
        out.flush()

    def answer(oid):
        typ, val = pdu.value(oid)
        reply(dotted(oid), typ, val)

    while True:
        cmd = sys.stdin.readline()
        if not cmd:
            return  # snmpd went away
        cmd = cmd.strip()
        if cmd == "PING":
            reply("PONG")
        elif cmd in ("get", "getnext"):
            try:
                oid = parse_oid(sys.stdin.readline())
            except ValueError:
                reply("NONE")
                continue
            if cmd == "get":
                answer(oid) if oid in pdu.cells else reply("NONE")
            else:
                i = bisect.bisect_right(pdu.order, oid)
                answer(pdu.order[i]) if i < len(pdu.order) else reply("NONE")
        elif cmd == "set":
            oid_line = sys.stdin.readline()
            typ, _, value = sys.stdin.readline().strip().partition(" ")
            try:
                oid = parse_oid(oid_line)
            except ValueError:
                reply("not-writable")
                continue
            reply(pdu.set(oid, typ, value))
        elif cmd == "":
            continue
        else:
            reply("NONE")


if __name__ == "__main__":
    main()
