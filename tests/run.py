#!/usr/bin/python3
"""
run.py - tern's test driver (what `make test` runs after building).

  /usr/bin/python3 tests/run.py [-k PATTERN] [--unit-only | --integration-only]
                                [--bin build/tern] [-j N] [--strict]

1. Unit tests: every cmocka binary build/tests/test_* and build/asan/tests/test_*
   runs from the repository root with CMOCKA_MESSAGE_OUTPUT=TAP; each
   "ok"/"not ok" line is one test. One more failure is counted for a binary
   that exits non-zero without a "not ok" line (a crash, a sanitizer report
   at exit), that prints no TAP at all, whose results do not match its plan
   ("1..N": N results numbered 1 to N), or that reports one test name twice;
   and for every tests/unit/test_*.c whose binary is missing (in each build).
2. Integration tests: tests/integration/test_*.py (unittest), once with
   TERN_BIN=build/tern and once with TERN_BIN=build/asan/tern, each file in
   its own worker process, two workers at a time. With the ASan build,
   ASAN_OPTIONS=detect_leaks=1:abort_on_error=0; the harness fails a test
   whose tern stderr shows a sanitizer report.
3. Fuzz targets (with the unit tests): every tests/fuzz/fuzz_*.c runs its
   committed seeds and then TERN_FUZZ_SECONDS (4) of fuzzing, one line
   "PASS fuzz fuzz_NAME" each (run_fuzz_target; docs/testing.md).

One line per test (PASS/FAIL/SKIP name), failure details and notes a test
made with harness.note() indented below,
and last exactly one line "N passed, N failed" (", N skipped" if any).
Exit status 1 if anything failed.

Strict mode (--strict, or CI=true in the environment as CI sets it): a
skipped test counts as a failure unless it is an opt-in test named in
ALLOWED_SKIPS. A skip hides a regression as well as a failure does; on a
machine `make deps` prepared, every other test can run.

A test listed in KNOWN_BUGS fails because of a reported tern bug: its
failure is printed as KNOWN (with the bug) and counted as skipped; if it
passes, that is a failure until the entry is removed.

Every tern the harness starts is recorded in a private directory
($TERN_TEST_PIDDIR); whatever a worker leaves behind (it timed out or
crashed) is killed by PID at the end, after checking its start time.
"""

import argparse
import concurrent.futures
import fnmatch
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTEGRATION_DIR = os.path.join(REPO, "tests", "integration")
VARIANTS = [("tern", "build/tern"), ("asan", "build/asan/tern")]
UNIT_DIRS = [("tern", "build/tests"), ("asan", "build/asan/tests")]
ASAN_OPTIONS = "detect_leaks=1:abort_on_error=0"
UNIT_TIMEOUT = 300
FILE_TIMEOUT = 600
# Files that take longest start first so two workers finish together.
SLOW_FIRST = ["test_outbound.py", "test_dsn.py", "test_routes.py", "test_dns.py", "test_tls.py",
              "test_auth.py", "test_limits.py", "test_crash.py"]
# Tests that may skip in strict mode: opt-in measurements, not checks.
# Full test names as printed, one per build.
ALLOWED_SKIPS = [
    "unit[tern] test_queue:test_memory_per_message",   # TERN_QUEUE_MEASURE=N (docs/queue.md)
    "unit[asan] test_queue:test_memory_per_message",
]

# Tests that fail because of a tern bug that is reported and not fixed yet
# (name without the build label -> the bug). Such a failure is shown as
# KNOWN and counted as skipped (allowed in strict mode: it is listed here,
# with its reason); once the test passes it fails until its line is
# removed, so the list cannot outlive the bugs.
KNOWN_BUGS = {
    # "integration test_x.Class.test_y": "what tern does wrong (where it is reported)",
}


def strict_from_env(environ):
    """CI systems set CI=true; so does .ci/run's caller."""
    return environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unlabelled(name):
    """ "integration[asan] test_x.C.test_y" -> "integration test_x.C.test_y" """
    return re.sub(r"^(\w+)\[[^\]]*\] ", r"\1 ", name)


def apply_known_bugs(items, known=None):
    """items: [(status, name, detail)]. A FAIL of a test in KNOWN_BUGS
    becomes KNOWN; its PASS becomes a FAIL asking to remove the entry."""
    known = KNOWN_BUGS if known is None else known
    out = []
    for status, name, detail in items:
        bug = known.get(unlabelled(name))
        if bug and status == "FAIL":
            status, detail = "KNOWN", "known bug: %s\n%s" % (bug, detail)
        elif bug and status == "PASS":
            status, detail = "FAIL", ("passes now, but tests/run.py KNOWN_BUGS says it fails (%s): "
                                      "remove its entry" % bug)
        out.append((status, name, detail))
    return out


def enforce_strict(items, strict):
    """items: [(status, name, detail)]. In strict mode a SKIP outside
    ALLOWED_SKIPS becomes a FAIL that says why it skipped."""
    if not strict:
        return items
    out = []
    for status, name, detail in items:
        if status == "SKIP" and name not in ALLOWED_SKIPS:
            reason = (detail or "").strip().splitlines()
            status, detail = "FAIL", ("skipped in strict mode (--strict or CI=true): %s\n"
                                      "only the opt-in tests of ALLOWED_SKIPS in tests/run.py may skip"
                                      % (reason[0] if reason else "no reason given"))
        out.append((status, name, detail))
    return out


def matches(pattern, name):
    if not pattern:
        return True
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*" + pattern + "*")
    return pattern in name


class Results:
    def __init__(self, strict=False):
        self.strict = strict
        self.lock = threading.Lock()
        self.counts = {"PASS": 0, "FAIL": 0, "SKIP": 0, "KNOWN": 0}
        self.failures = []
        self.known = []

    def emit_block(self, items):
        """items: list of (status, name, detail). Printed together."""
        items = enforce_strict(apply_known_bugs(items), self.strict)
        with self.lock:
            for status, name, detail in items:
                self.counts[status] += 1
                line = "%s %s" % (status, name)
                if status in ("SKIP", "KNOWN") and detail:
                    line += "  (%s)" % detail.strip().splitlines()[0]
                print(line)
                if status == "KNOWN":
                    self.known.append(name)
                    lines = [d.strip() for d in detail.strip().splitlines() if d.strip()]
                    errs = [d for d in lines if re.match(r"^[\w.]+(Error|Exception)\b", d)]
                    for d in (errs or lines)[-1:]:     # how it failed: still the bug?
                        print("    " + d[:300])
                if status == "PASS" and detail:      # notes (harness.note)
                    for d in detail.rstrip().splitlines():
                        print("    " + d)
                if status == "FAIL":
                    self.failures.append(name)
                    if detail:
                        for d in detail.rstrip().splitlines():
                            print("    " + d)
            sys.stdout.flush()


# --------------------------------------------------------------------------
# unit tests

def parse_tap(out):
    """(plans, cases) from cmocka TAP output. plans: [N] for each "1..N"
    line; cases: [[ok, name, detail, number, plan index]] with ok True,
    False or "SKIP" and number the TAP test number (None if absent)."""
    plans = []
    cases = []
    for raw in out.splitlines():
        line = raw.rstrip()
        m = re.match(r"^1\.\.(\d+)\b", line)
        if m:
            plans.append(int(m.group(1)))
            continue
        if line.startswith("ok ") or line.startswith("not ok "):
            ok = line.startswith("ok ")
            rest = line[3:] if ok else line[7:]
            # TAP directive: cmocka writes "not ok N # SKIP name" for skip()
            num, sep, skipped = rest.partition(" # SKIP")
            if sep:
                ok, name = "SKIP", skipped.strip()
            else:
                num, _, name = rest.partition(" - ")
                name = name.strip()
            num = num.strip()
            number = int(num) if num.isdigit() else None
            cases.append([ok, name or num, "", number, len(plans) - 1])
        elif line.startswith("#") and cases and cases[-1][0] is False:
            if line.startswith("# not ok - ") or line.startswith("# ok - "):
                continue   # group summary
            cases[-1][2] += line[1:].strip() + "\n"
    return plans, cases


def tap_problems(plans, cases):
    """What is wrong with a binary's TAP as a whole (list of strings): no
    TAP at all; results that do not match their plan (each "1..N" must be
    followed by exactly N results numbered 1 to N, so a binary that dies
    half-way or a result printed twice is seen); a test name twice."""
    problems = []
    if not plans and not cases:
        return ["no TAP output (no plan, no result line)"]
    if not plans:
        problems.append("no TAP plan (1..N) before the %d result line(s)" % len(cases))
    for i, n in enumerate(plans):
        nums = [c[3] for c in cases if c[4] == i]
        if nums != list(range(1, n + 1)):
            problems.append("plan %d: 1..%d, but %d result line(s) numbered %s"
                            % (i + 1, n, len(nums), _ranges(nums)))
    if plans and any(c[4] < 0 for c in cases):
        problems.append("result line(s) before the first plan")
    seen = {}
    for c in cases:
        seen[c[1]] = seen.get(c[1], 0) + 1
    dups = sorted(n for n, k in seen.items() if k > 1)
    if dups:
        problems.append("duplicate result lines for %s" % ", ".join(
            "%s (%d times)" % (n, seen[n]) for n in dups))
    return problems


def _ranges(nums):
    if not nums:
        return "(none)"
    if len(nums) > 12:
        return "%s ... %s" % (" ".join(map(str, nums[:6])), " ".join(map(str, nums[-3:])))
    return " ".join("?" if n is None else str(n) for n in nums)


def unit_items(base, rel, out, rc, timed_out, pattern):
    """The result lines of one unit binary's run: one per TAP result, and
    one failure for the binary as a whole (named after base and rel) when
    it timed out, exited non-zero without a "not ok", or its TAP is wrong
    (tap_problems)."""
    plans, cases = parse_tap(out)
    items = []
    seen = {}
    for ok, name, detail, _, _ in cases:
        seen[name] = seen.get(name, 0) + 1
        full = "%s:%s" % (base, name) + ("#%d" % seen[name] if seen[name] > 1 else "")
        if matches(pattern, full):
            status = "SKIP" if ok == "SKIP" else "PASS" if ok else "FAIL"
            items.append((status, full, detail))
    any_fail = any(c[0] is False for c in cases)
    why = []
    if timed_out:
        why.append("timed out after %ds" % UNIT_TIMEOUT)
    elif rc != 0 and not any_fail:
        why.append("exited with status %s%s" % (rc, "" if not cases else
                                                " after its TAP lines (crash or sanitizer report?)"))
    why += tap_problems(plans, cases)
    if why:
        full = "%s (%s)" % (base, rel)
        if matches(pattern, full) or matches(pattern, base):
            tail = "\n".join(out.splitlines()[-40:])
            items.append(("FAIL", full, "%s\n%s" % ("; ".join(why), tail)))
    return items


def run_unit_binary(label, path, pattern):
    env = dict(os.environ)
    env["CMOCKA_MESSAGE_OUTPUT"] = "TAP"
    env.setdefault("ASAN_OPTIONS", ASAN_OPTIONS)
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    rel = os.path.relpath(path, REPO)
    base = "unit[%s] %s" % (label, os.path.basename(path))
    try:
        p = subprocess.run([path], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=UNIT_TIMEOUT, start_new_session=True)
        out, rc, timed_out = p.stdout.decode("utf-8", "replace"), p.returncode, False
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace")
        rc, timed_out = None, True
    return unit_items(base, rel, out, rc, timed_out, pattern)


def missing_unit_binaries(repo, variants, pattern):
    """A failure for each tests/unit/test_*.c without its binary in each
    build of variants: a test that was never built never fails."""
    items = []
    for src in sorted(glob.glob(os.path.join(repo, "tests", "unit", "test_*.c"))):
        stem = os.path.splitext(os.path.basename(src))[0]
        for label, d in UNIT_DIRS:
            if label not in variants:
                continue
            binpath = os.path.join(repo, d, stem)
            name = "unit[%s] %s (%s)" % (label, stem, os.path.relpath(binpath, repo))
            if not (os.path.isfile(binpath) and os.access(binpath, os.X_OK)) and matches(pattern, name):
                items.append(("FAIL", name, "%s has no binary %s: not built (make unit)"
                              % (os.path.relpath(src, repo), os.path.relpath(binpath, repo))))
    return items


def unit_binaries(variants):
    out = []
    for label, d in UNIT_DIRS:
        if label not in variants:
            continue
        for p in sorted(glob.glob(os.path.join(REPO, d, "test_*"))):
            if os.path.isfile(p) and os.access(p, os.X_OK) and "." not in os.path.basename(p):
                out.append((label, p))
    return out


# --------------------------------------------------------------------------
# fuzz targets: each built target runs briefly (docs/testing.md)

FUZZ_SECONDS = int(os.environ.get("TERN_FUZZ_SECONDS", "4"))


def fuzz_target_names():
    return sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(REPO, "tests", "fuzz", "fuzz_*.c")))


def run_fuzz_target(name):
    """One line for tests/fuzz/<name>.c: PASS when every committed seed of
    tests/fuzz/corpus/<name>/ and then FUZZ_SECONDS of fuzzing on a
    temporary copy of that corpus run clean. A crash keeps its reproducer
    in build/fuzz/crashes/<name>/."""
    full = "fuzz %s" % name
    exe = os.path.join(REPO, "build", "fuzz", name)
    seeds = os.path.join(REPO, "tests", "fuzz", "corpus", name)
    if not os.access(exe, os.X_OK):
        return [("FAIL", full, "build/fuzz/%s is not built (make fuzz)" % name)]
    files = sorted(glob.glob(os.path.join(seeds, "*")))
    if not files:
        return [("FAIL", full, "no seed corpus in tests/fuzz/corpus/%s/" % name)]
    tmp = tempfile.mkdtemp(prefix="tern-fuzz-")
    try:
        corpus = os.path.join(tmp, "corpus")
        shutil.copytree(seeds, corpus)
        art = os.path.join(tmp, "artifacts") + "/"
        os.mkdir(art)
        common = ["-timeout=60", "-artifact_prefix=" + art]
        steps = [("a seed", [exe] + common + files),
                 ("%ds of fuzzing" % FUZZ_SECONDS,
                  [exe] + common + ["-max_total_time=%d" % FUZZ_SECONDS, corpus])]
        for what, cmd in steps:
            try:
                p = subprocess.run(cmd, cwd=tmp, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=FUZZ_SECONDS + 300)
                out, rc = p.stdout.decode("utf-8", "replace"), p.returncode
            except subprocess.TimeoutExpired as e:
                out, rc = (e.stdout or b"").decode("utf-8", "replace"), "timeout"
            if rc == 0:
                continue
            keep = os.path.join(REPO, "build", "fuzz", "crashes", name)
            os.makedirs(keep, exist_ok=True)
            kept = []
            for f in os.listdir(art):
                shutil.copy(os.path.join(art, f), keep)
                kept.append(os.path.relpath(os.path.join(keep, f), REPO))
            running = [l[9:] for l in out.splitlines() if l.startswith("Running: ")]
            if not kept and running:   # a seed: it is its own reproducer
                kept.append(os.path.relpath(running[-1].strip(), REPO))
            tail = "\n".join(out.splitlines()[-60:])
            return [("FAIL", full, "%s failed (status %s); reproducer: %s\n"
                     "rerun: build/fuzz/%s %s\n%s"
                     % (what, rc, ", ".join(kept) or "none written", name,
                        kept[0] if kept else "FILE", tail))]
        return [("PASS", full, "")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_fuzz_targets(results, pool, pattern):
    names = [n for n in fuzz_target_names() if matches(pattern, "fuzz %s" % n)]
    for f in [pool.submit(run_fuzz_target, n) for n in names]:
        results.emit_block(f.result())


# --------------------------------------------------------------------------
# integration tests: the worker side (one file, one binary)

def worker_main(args):
    """Run one integration test file; write one JSON line per result."""
    sys.path.insert(0, INTEGRATION_DIR)
    os.environ["TERN_BIN"] = args.bin
    resfile = open(args.results, "a", buffering=1)
    label = args.label

    def term(signum, frame):
        raise SystemExit(128 + signum)   # atexit in harness stops tern by PID
    signal.signal(signal.SIGTERM, term)

    def emit(status, test_id, detail=""):
        resfile.write(json.dumps({"status": status, "name": "integration[%s] %s" % (label, test_id),
                                  "detail": detail}) + "\n")
        resfile.flush()

    class Result(unittest.TestResult):
        """One line per test: a failure in the test and another in its
        tearDown are merged. Class-level errors (setUpClass/tearDownClass)
        have no startTest and are reported at once."""

        def __init__(self):
            super().__init__()
            self.cur = None

        def startTest(self, test):
            super().startTest(test)
            self.cur = {"id": test.id(), "status": "PASS", "detail": ""}

        def stopTest(self, test):
            super().stopTest(test)
            if self.cur is not None:
                # harness.note(): what a test reports besides pass/fail
                h = sys.modules.get("harness")
                notes = list(getattr(h, "NOTES", []))
                if notes:
                    del h.NOTES[:]
                    self.cur["detail"] = "".join("note: %s\n" % n for n in notes) + self.cur["detail"]
                emit(self.cur["status"], self.cur["id"], self.cur["detail"])
            self.cur = None

        def _record(self, test, status, detail):
            if self.cur is None or test.id() != self.cur["id"]:
                emit(status, test.id(), detail)   # class or module fixture
                return
            rank = {"PASS": 0, "SKIP": 1, "FAIL": 2}
            if rank[status] >= rank[self.cur["status"]]:
                if status == "FAIL" and self.cur["status"] == "FAIL":
                    self.cur["detail"] += "\n"
                elif status != self.cur["status"]:
                    self.cur["detail"] = ""
                self.cur["status"] = status
                self.cur["detail"] += detail

        def addSuccess(self, test):
            pass

        def addFailure(self, test, err):
            self._record(test, "FAIL", self._exc_info_to_string(err, test))

        def addError(self, test, err):
            self._record(test, "FAIL", self._exc_info_to_string(err, test))

        def addSkip(self, test, reason):
            self._record(test, "SKIP", reason)

        def addExpectedFailure(self, test, err):
            pass

        def addUnexpectedSuccess(self, test):
            self._record(test, "FAIL", "unexpected success")

        def addSubTest(self, test, subtest, err):
            if err is not None:
                self._record(test, "FAIL", "[%s] %s" % (subtest.id(), self._exc_info_to_string(err, subtest)))

    modname = os.path.splitext(os.path.basename(args.worker))[0]
    try:
        suite = unittest.defaultTestLoader.loadTestsFromName(modname)
    except Exception:
        emit("FAIL", modname + " (import)", traceback.format_exc())
        return 1

    def flatten(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                yield from flatten(t)
            else:
                yield t
    tests = [t for t in flatten(suite)
             if matches(args.k, "integration[%s] %s" % (label, t.id()))]
    if not tests:
        return 0
    unittest.TestSuite(tests).run(Result())
    return 0


# --------------------------------------------------------------------------
# integration tests: the driver side

def run_integration_file(label, binpath, path, pattern, piddir):
    name = os.path.basename(path)
    fd, resfile = tempfile.mkstemp(prefix="tern-results-", suffix=".jsonl")
    os.close(fd)
    env = dict(os.environ)
    env["TERN_BIN"] = binpath
    env["TERN_TEST_PIDDIR"] = piddir
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if label == "asan":
        env["ASAN_OPTIONS"] = ASAN_OPTIONS
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    cmd = [py, os.path.abspath(__file__), "--worker", path, "--bin", binpath,
           "--label", label, "--results", resfile]
    if pattern:
        cmd += ["-k", pattern]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=FILE_TIMEOUT)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.kill(proc.pid, signal.SIGTERM)     # lets the harness stop its terns
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # the worker's own group
            except ProcessLookupError:
                pass
            out, _ = proc.communicate()
    items = []
    try:
        with open(resfile) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                items.append((r["status"], r["name"], r.get("detail", "")))
    finally:
        os.unlink(resfile)
    text = out.decode("utf-8", "replace")
    if timed_out:
        items.append(("FAIL", "integration[%s] %s (worker)" % (label, name),
                      "timed out after %ds; output tail:\n%s" % (FILE_TIMEOUT, "\n".join(text.splitlines()[-30:]))))
    elif proc.returncode != 0:
        items.append(("FAIL", "integration[%s] %s (worker)" % (label, name),
                      "worker exited with status %s; output tail:\n%s"
                      % (proc.returncode, "\n".join(text.splitlines()[-30:]))))
    return items, time.monotonic() - start


def kill_leftovers(piddir):
    """Kill (by PID, after checking start time) any tern a worker left behind."""
    for name in os.listdir(piddir):
        try:
            with open(os.path.join(piddir, name)) as f:
                pid, pgid, starttime = (int(x) for x in f.read().split()[:3])
        except (OSError, ValueError):
            continue
        try:
            with open("/proc/%d/stat" % pid) as f:
                data = f.read()
            st = int(data[data.rfind(")") + 2:].split()[19])
        except (OSError, ValueError, IndexError):
            st = None
        if st is not None and st == starttime:
            print("# killing leftover tern pid %d (group %d)" % (pid, pgid))
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.unlink(os.path.join(piddir, name))
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description="tern test driver")
    ap.add_argument("-k", metavar="PATTERN", help="only tests whose name matches (substring or glob)")
    ap.add_argument("--unit-only", action="store_true")
    ap.add_argument("--integration-only", action="store_true")
    ap.add_argument("--bin", help="integration tests against this binary only (e.g. build/tern)")
    ap.add_argument("-j", type=int, default=2, help="parallel workers (default 2)")
    ap.add_argument("--strict", action="store_true",
                    help="a skip outside ALLOWED_SKIPS fails (the default when CI=true)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--label", help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        sys.exit(worker_main(args))

    os.chdir(REPO)
    variants = VARIANTS
    if args.bin:
        b = os.path.relpath(os.path.abspath(args.bin), REPO)
        known = dict((p, l) for l, p in VARIANTS)
        variants = [(known.get(b, os.path.basename(os.path.dirname(os.path.abspath(args.bin))) or "bin"), b)]
    labels = [l for l, _ in variants]
    strict = args.strict or strict_from_env(os.environ)
    results = Results(strict)
    if strict:
        print("# strict mode: a skip fails unless allowed (%s)" % ", ".join(ALLOWED_SKIPS))
    piddir = tempfile.mkdtemp(prefix="tern-pids-")
    t0 = time.monotonic()

    def on_signal(signum, frame):
        kill_leftovers(piddir)
        sys.exit(130)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.j))
        if not args.integration_only:
            bins = unit_binaries(labels)
            if not bins:
                print("# no unit-test binaries under build/tests or build/asan/tests")
            results.emit_block(missing_unit_binaries(REPO, labels, args.k))
            futs = [pool.submit(run_unit_binary, l, p, args.k) for l, p in bins]
            for f in futs:
                results.emit_block(f.result())
            run_fuzz_targets(results, pool, args.k)
        if not args.unit_only:
            files = sorted(glob.glob(os.path.join(INTEGRATION_DIR, "test_*.py")))
            files.sort(key=lambda p: (SLOW_FIRST.index(os.path.basename(p))
                                      if os.path.basename(p) in SLOW_FIRST else len(SLOW_FIRST)))
            for label, b in variants:
                if not os.access(os.path.join(REPO, b), os.X_OK):
                    print("# %s not built: its integration tests are skipped" % b)
            # file by file, both builds: the slow files of both start first
            jobs = [(label, b, p) for p in files for label, b in variants]
            futs = {pool.submit(run_integration_file, l, b, p, args.k, piddir): (l, p) for l, b, p in jobs}
            for f in concurrent.futures.as_completed(futs):
                l, p = futs[f]
                try:
                    items, secs = f.result()
                except Exception:
                    items, secs = [("FAIL", "integration[%s] %s (driver)" % (l, os.path.basename(p)),
                                    traceback.format_exc())], 0
                results.emit_block(items)
                if items:
                    print("# %s %s: %.0fs" % (l, os.path.basename(p), secs))
        pool.shutdown()
    finally:
        kill_leftovers(piddir)
        try:
            os.rmdir(piddir)
        except OSError:
            pass

    c = results.counts
    if results.failures:
        print("# failed: %s" % ", ".join(results.failures[:50]) + (" ..." if len(results.failures) > 50 else ""))
    if results.known:
        print("# known tern bugs (tests/run.py KNOWN_BUGS), counted as skipped: %s" % ", ".join(results.known))
    print("# took %.0fs" % (time.monotonic() - t0))
    line = "%d passed, %d failed" % (c["PASS"], c["FAIL"])
    if c["SKIP"] + c["KNOWN"]:
        line += ", %d skipped" % (c["SKIP"] + c["KNOWN"])
    print(line)
    sys.exit(1 if c["FAIL"] else 0)


if __name__ == "__main__":
    main()
