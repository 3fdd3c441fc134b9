#!/usr/bin/python3
"""
long.py - run each libFuzzer target for a set time (`make fuzz-long`).

  /usr/bin/python3 tests/fuzz/long.py [TARGET...]

Environment:
  FUZZ_SECONDS  seconds per target (default 1200)
  FUZZ_CPU      1: FUZZ_SECONDS counts the target's CPU time, not the
                clock (on a shared machine a niced run gets a fraction of
                a core; the run is interrupted once it has had its time)
  FUZZ_JOBS     targets run at once (default 1; the machine is shared)
  FUZZ_SEED     libFuzzer -seed (default: from the clock; printed, so a
                run can be repeated with FUZZ_FRESH=1 FUZZ_SEED=N)
  FUZZ_FRESH    1: start from the committed seeds only, dropping the
                corpus grown by earlier runs
  FUZZ_ARGS     more libFuzzer options, e.g. "-max_len=8192"
  FUZZ_BIN_DIR  where the target binaries are (default build/fuzz; a copy
                lets `make fuzz` rebuild while a long run goes on)

Each target fuzzes build/fuzz/corpus/<target>/, which starts as a copy of
its committed seeds (tests/fuzz/corpus/<target>/) and keeps what earlier
runs found; nothing is written into the repository. A crash stops that
target: the reproducer goes to build/fuzz/crashes/<target>/ and the full
output to build/fuzz/logs/<target>.log. The last lines are a table: CPU
seconds used, executions, exec/s, final coverage (cov: edges, ft: features), corpus
units before and after, units added, crashes. Exit status 1 if any target
crashed or did not run.
"""

import concurrent.futures
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, "build", "fuzz")
SEEDS = os.path.join(REPO, "tests", "fuzz", "corpus")
STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
ARTIFACT = re.compile(r"Test unit written to (\S+)")

lock = threading.Lock()


def say(msg):
    with lock:
        print(msg)
        sys.stdout.flush()


def targets(names):
    found = sorted(os.path.splitext(os.path.basename(p))[0]
                   for p in glob.glob(os.path.join(REPO, "tests", "fuzz", "fuzz_*.c")))
    if not names:
        return found
    unknown = [n for n in names if n not in found]
    if unknown:
        sys.exit("long.py: no such target: %s (have: %s)" % (", ".join(unknown), ", ".join(found)))
    return names


def units(d):
    return len([f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f))])


def cpu_seconds(pid):
    """user + system time of a running process, from /proc."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
        fields = data[data.rfind(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def wait_cpu(p, seconds):
    """Wait for p; with a CPU budget, interrupt it (SIGINT: libFuzzer
    prints its final stats and exits 72) once it has used seconds.
    Returns (exit status, CPU seconds used)."""
    while seconds is not None:
        try:
            _, status, ru = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if _ == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_utime + ru.ru_stime
        if cpu_seconds(p.pid) >= seconds:
            p.send_signal(signal.SIGINT)
            seconds = None
            break
        time.sleep(1)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_utime + ru.ru_stime


def run(name, seconds, seed, fresh, extra):
    res = {"target": name, "execs": 0, "exec_s": 0, "cov": 0, "ft": 0, "cpu": 0,
           "before": 0, "after": 0, "new": 0, "crashes": 0, "note": ""}
    exe = os.path.join(os.environ.get("FUZZ_BIN_DIR", BUILD), name)
    if not os.access(exe, os.X_OK):
        res["note"] = "not built (make fuzz)"
        res["crashes"] = None
        return res
    corpus = os.path.join(BUILD, "corpus", name)
    crashes = os.path.join(BUILD, "crashes", name)
    logs = os.path.join(BUILD, "logs")
    if fresh and os.path.isdir(corpus):
        shutil.rmtree(corpus)
    for d in (corpus, crashes, logs):
        os.makedirs(d, exist_ok=True)
    seeds = os.path.join(SEEDS, name)
    if os.path.isdir(seeds):
        for f in os.listdir(seeds):
            dst = os.path.join(corpus, f)
            if not os.path.exists(dst):
                shutil.copyfile(os.path.join(seeds, f), dst)
    res["before"] = units(corpus)
    by_cpu = os.environ.get("FUZZ_CPU", "") == "1"
    cmd = ["nice", "-n", "10", exe,
           "-max_total_time=%d" % (seconds * 20 if by_cpu else seconds),
           "-print_final_stats=1", "-seed=%d" % seed, "-timeout=30",
           "-artifact_prefix=%s/" % crashes] + extra + [corpus]
    logpath = os.path.join(logs, name + ".log")
    say("# %s: %ds, seed %d, %d units, log %s" % (name, seconds, seed, res["before"],
                                                  os.path.relpath(logpath, REPO)))
    with open(logpath, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        p = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT)
        rc, res["cpu"] = wait_cpu(p, seconds if by_cpu else None)
    with open(logpath, errors="replace") as log:
        for line in log:
            m = STATUS.match(line)
            if m:
                res["execs"], res["cov"], res["ft"] = int(m.group(1)), int(m.group(2)), int(m.group(3))
            m = STAT.match(line)
            if m:
                k, v = m.group(1), int(m.group(2))
                if k == "number_of_executed_units":
                    res["execs"] = v
                elif k == "average_exec_per_sec":
                    res["exec_s"] = v
                elif k == "new_units_added":
                    res["new"] = v
            m = ARTIFACT.search(line)
            if m:
                res["crashes"] += 1
                res["note"] = os.path.relpath(os.path.join(REPO, m.group(1)), REPO)
    res["after"] = units(corpus)
    interrupted = by_cpu and rc == 72   # our SIGINT: the budget was used
    if rc != 0 and not interrupted and res["crashes"] == 0:
        res["crashes"] = None
        res["note"] = "exit status %d, see the log" % rc
    return res


def main():
    seconds = int(os.environ.get("FUZZ_SECONDS", "1200"))
    jobs = max(1, int(os.environ.get("FUZZ_JOBS", "1")))
    seed = int(os.environ.get("FUZZ_SEED", str(int(time.time()) % 1000000007)))
    fresh = os.environ.get("FUZZ_FRESH", "") == "1"
    extra = os.environ.get("FUZZ_ARGS", "").split()
    names = targets(sys.argv[1:])
    say("# fuzz-long: %d target(s), %ds%s each, %d at a time, FUZZ_SEED=%d" %
        (len(names), seconds, " of CPU" if os.environ.get("FUZZ_CPU") == "1" else "",
         jobs, seed))
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda n: run(n, seconds, seed, fresh, extra), names))
    hdr = "%-22s %7s %12s %8s %6s %7s %13s %6s %7s  %s" % (
        "TARGET", "CPU S", "EXECUTIONS", "EXEC/S", "COV", "FT", "CORPUS", "NEW", "CRASHES", "")
    print(hdr)
    bad = False
    for r in results:
        crashed = "?" if r["crashes"] is None else str(r["crashes"])
        bad |= r["crashes"] != 0
        print("%-22s %7d %12d %8d %6d %7d %6d->%-6d %6d %7s  %s" % (
            r["target"], r["cpu"], r["execs"], r["exec_s"], r["cov"], r["ft"], r["before"],
            r["after"], r["new"], crashed, r["note"]))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
