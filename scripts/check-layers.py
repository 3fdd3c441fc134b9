#!/usr/bin/python3
"""
check-layers.py - fail on an #include that points the wrong way, or on an
include cycle between modules (`make test` runs it; see docs/architecture.md).

Each folder under src/ is a layer or a process role. A file may include
headers of its own folder and of folders of a lower rank; the role folders
(same rank) never include each other: they talk over IPC, not through
headers. A module is a file stem (foo.c + foo.h); a module's dependencies
are the headers its .c and .h include, and no module may reach itself.
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


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    root = os.path.normpath(root)
    errors = []
    deps = {}
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

    # Cycles between modules, by depth-first search.
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(deps.get(m, ())):
            if state.get(d) == 1:
                cyc = stack[stack.index(d):] + [d]
                errors.append("include cycle: " + " -> ".join(cyc))
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
