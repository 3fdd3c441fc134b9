#!/usr/bin/python3
"""
check-layers.py - fail on an #include that points the wrong way, or on an
include cycle between modules (`make test` runs it; see docs/architecture.md).

Each folder under src/ is a layer or a process role. A file may include
headers of its own folder and of folders of a lower rank; the role folders
(same rank) never include each other: they talk over IPC, not through
headers. A module is a file stem (foo.c + foo.h); a module's dependencies
are the headers its .c and .h include, and no module may reach itself.

A header also depends on the module that implements what it declares: if
foo.h declares bar_run() and bar.c defines it, whoever includes foo.h
needs bar, so foo -> bar is an edge like an include. That catches the
cycle an include graph alone misses: foo.h declares hooks that bar.c
implements, while bar.c includes foo.h (declared here, implemented
there). Two cases are one module split over files, not such a hook:
foo.h implemented by foo_*.c of its folder (conf/config.h by
config_parse.c, config_lookup.c, ...), and a subsystem's internal header
(name ending in _int.h), whose includers are by design its implementers.
"""

import os
import re
import sys

RANKS = {
    "lib": 0,     # no mail knowledge: allocation, strings, logging, IPC, TLS
    "mail": 1,    # addresses, envelopes, DSN building, SASL codecs
    "conf": 2,    # configuration, users, aliases, passwd
    "dns": 3,     # resolver
    "proto": 3,   # wire codecs between the processes
    "smtpd": 4,   # role: the smtp process
    "queue": 4,   # role: the queue process
    "relay": 4,   # role: the relay process
    "cmd": 5,     # commands: serve (the parent), sendmail, queue, passwd, ...
}
ROLE_RANK = 4
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
COMMENT = re.compile(r'/\*.*?\*/|//[^\n]*', re.S)
# A function definition in this tree's style: the name at the start of a
# line, its type on the line above (static ones are the file's own).
DEFINITION = re.compile(r'^([A-Za-z_]\w*)\(')
CALLED = re.compile(r'\b([A-Za-z_]\w*)\s*\(')


def defined_functions(text):
    """Names of the non-static functions a .c file defines."""
    names = []
    prev = ""
    for line in text.split("\n"):
        m = DEFINITION.match(line)
        if m and not line.rstrip().endswith(";") and "static" not in prev.split():
            names.append(m.group(1))
        if line.strip():
            prev = line
    return names


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    root = os.path.normpath(root)
    errors = []
    deps = {}
    definer = {}      # function name -> modules defining it
    headers = {}      # header module -> its text without comments
    for folder in sorted(os.listdir(root)):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            continue
        if folder not in RANKS:
            errors.append("src/%s: folder has no rank in scripts/check-layers.py" % folder)
            continue
        for name in sorted(os.listdir(path)):
            if not name.endswith((".c", ".h")):
                continue
            module = folder + "/" + name[:-2]
            with open(os.path.join(path, name), encoding="utf-8") as f:
                text = f.read()
            if name.endswith(".c"):
                for fn in defined_functions(text):
                    definer.setdefault(fn, set()).add(module)
            elif not name.endswith("_int.h"):
                headers[module] = COMMENT.sub(" ", text)
            for inc in INCLUDE.findall(text):
                where = "src/%s/%s" % (folder, name)
                if "/" not in inc:
                    errors.append("%s: #include \"%s\" names no folder" % (where, inc))
                    continue
                ifolder = inc.split("/", 1)[0]
                if ifolder not in RANKS:
                    errors.append("%s: #include \"%s\": unknown folder" % (where, inc))
                    continue
                if not os.path.exists(os.path.join(root, inc)):
                    errors.append("%s: #include \"%s\": no such header" % (where, inc))
                    continue
                if ifolder != folder:
                    r, ir = RANKS[folder], RANKS[ifolder]
                    if ir > r or (ir == r):
                        errors.append("%s: #include \"%s\": %s (rank %d) may not "
                                      "include %s (rank %d)" % (where, inc, folder, r, ifolder, ir))
                target = inc[:-2]
                if target != module:
                    deps.setdefault(module, set()).add(target)

    # A header depends on the modules implementing what it declares.
    deps_by_include = {k: set(v) for k, v in deps.items()}
    implements = {}   # (header module, module) -> a function, for messages
    for module, text in sorted(headers.items()):
        for fn in sorted(set(CALLED.findall(text))):
            for m in sorted(definer.get(fn, ())):
                if m != module and not m.startswith(module + "_"):
                    deps.setdefault(module, set()).add(m)
                    implements.setdefault((module, m), fn)

    def edge(a, b):
        if (a, b) in implements and b not in deps_by_include.get(a, ()):
            return " -(%s.h declares %s(), defined in %s.c)-> %s" % (
                a, implements[(a, b)], b, b)
        return " -> " + b

    # Cycles between modules, by depth-first search.
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(deps.get(m, ())):
            if state.get(d) == 1:
                cyc = stack[stack.index(d):] + [d]
                errors.append("include cycle: " + cyc[0] + "".join(
                    edge(a, b) for a, b in zip(cyc, cyc[1:])))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(deps):
        if m not in state:
            visit(m)

    for e in errors:
        print("check-layers: " + e, file=sys.stderr)
    if errors:
        return 1
    print("check-layers: %d modules, includes point one way, no cycles" % len(deps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
