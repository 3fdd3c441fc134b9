"""
test_runner.py - tests/run.py counts what the unit binaries report, and
cannot be fooled into a pass.

Fake TAP (as cmocka writes it) goes through the same functions run.py
uses for a real binary: a plan that does not match its results, no TAP at
all, a result line printed twice, a non-zero exit after only "ok" lines,
and a tests/unit/test_*.c without its binary are each one failure; strict
mode (CI=true) turns every skip outside the allow-list into a failure; a
test in KNOWN_BUGS that passes is a failure.
One fake binary (a shell script) runs through run_unit_binary() end to end.
Needs no tern.
"""

import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import run  # noqa: E402  (tests/run.py)

GOOD = """1..3
ok 1 - test_a
ok 2 - test_b
not ok 3 # SKIP test_c
# ok - tests
"""


def statuses(items):
    return [(st, name) for st, name, _ in items]


def binary_failures(items):
    """The failures charged to the binary as a whole: "base (rel)"."""
    return [(name, detail) for st, name, detail in items if st == "FAIL" and name.endswith("(build/tests/test_x)")]


class TapCounting(unittest.TestCase):
    BASE, REL = "unit[tern] test_x", "build/tests/test_x"

    def items(self, out, rc=0, timed_out=False, pattern=None):
        return run.unit_items(self.BASE, self.REL, out, rc, timed_out, pattern)

    def assertBinaryFails(self, items, why):
        fails = binary_failures(items)
        self.assertEqual(len(fails), 1, items)
        self.assertIn(why, fails[0][1])

    def test_good_output(self):
        items = self.items(GOOD)
        self.assertEqual(statuses(items), [("PASS", "unit[tern] test_x:test_a"),
                                           ("PASS", "unit[tern] test_x:test_b"),
                                           ("SKIP", "unit[tern] test_x:test_c")])

    def test_failure_detail_and_exit_status(self):
        out = "1..2\nok 1 - test_a\nnot ok 2 - test_b\n# Error: want 1 got 2\n# not ok - tests\n"
        items = self.items(out, rc=1)
        self.assertEqual(statuses(items), [("PASS", "unit[tern] test_x:test_a"),
                                           ("FAIL", "unit[tern] test_x:test_b")])
        self.assertIn("want 1 got 2", items[1][2])

    def test_plan_larger_than_results(self):
        # the binary died after two of three tests, and exited 0 anyway
        out = "1..3\nok 1 - test_a\nok 2 - test_b\n"
        self.assertBinaryFails(self.items(out), "plan 1: 1..3, but 2 result line(s)")

    def test_plan_smaller_than_results(self):
        out = "1..1\nok 1 - test_a\nok 2 - test_b\n"
        self.assertBinaryFails(self.items(out), "plan 1: 1..1, but 2 result line(s)")

    def test_numbers_out_of_order(self):
        out = "1..2\nok 2 - test_b\nok 1 - test_a\n"
        self.assertBinaryFails(self.items(out), "numbered 2 1")

    def test_no_plan(self):
        self.assertBinaryFails(self.items("ok 1 - test_a\n"), "no TAP plan")

    def test_no_tap_output(self):
        for out in ("", "Segmentation fault\n", "[==========] Running 3 test(s).\n"):
            self.assertBinaryFails(self.items(out, rc=0), "no TAP output")

    def test_duplicate_result_lines(self):
        out = "1..3\nok 1 - test_a\nok 2 - test_b\nok 3 - test_a\n"
        items = self.items(out)
        self.assertBinaryFails(items, "duplicate result lines for test_a (2 times)")
        # both lines are still shown, the second one marked
        self.assertIn(("PASS", "unit[tern] test_x:test_a#2"), statuses(items))

    def test_two_groups(self):
        out = "1..2\nok 1 - test_a\nok 2 - test_b\n# ok - one\n1..1\nok 1 - test_c\n# ok - two\n"
        self.assertEqual(binary_failures(self.items(out)), [])
        out = "1..2\nok 1 - test_a\nok 2 - test_b\n1..2\nok 1 - test_c\n"
        self.assertBinaryFails(self.items(out), "plan 2: 1..2, but 1 result line(s)")

    def test_nonzero_exit_after_ok_lines(self):
        # a sanitizer report at exit: every test passed, the binary did not
        self.assertBinaryFails(self.items(GOOD, rc=1), "exited with status 1 after its TAP lines")

    def test_timeout(self):
        self.assertBinaryFails(self.items("1..3\nok 1 - test_a\n", rc=None, timed_out=True), "timed out")

    def test_pattern_does_not_hide_a_broken_plan(self):
        # -k selects results, but the plan is checked on all of them
        out = "1..3\nok 1 - test_a\nok 2 - test_b\n"
        items = self.items(out, pattern="test_x")
        self.assertEqual(len(binary_failures(items)), 1, items)


class FakeBinary(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tern-runner-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def fake(self, name, script):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write("#!/bin/sh\n" + script)
        os.chmod(p, 0o755)
        return p

    def test_run_unit_binary(self):
        # cmocka prints TAP only when asked to: the runner must ask
        p = self.fake("test_fake", '[ "$CMOCKA_MESSAGE_OUTPUT" = TAP ] || exit 3\n'
                                   'printf "1..2\\nok 1 - test_a\\nok 2 - test_b\\n"\n')
        items = run.run_unit_binary("tern", p, None)
        self.assertEqual([st for st, _, _ in items], ["PASS", "PASS"], items)

    def test_run_unit_binary_crash(self):
        p = self.fake("test_crash", 'printf "1..2\\nok 1 - test_a\\n"\nkill -SEGV $$\n')
        items = run.run_unit_binary("tern", p, None)
        fails = [d for st, _, d in items if st == "FAIL"]
        self.assertEqual(len(fails), 1, items)
        self.assertIn("exited with status -11", fails[0])
        self.assertIn("plan 1: 1..2, but 1 result line(s)", fails[0])

    def test_missing_binary(self):
        for d in ("tests/unit", "build/tests", "build/asan/tests"):
            os.makedirs(os.path.join(self.dir, d))
        for stem in ("test_one", "test_two"):
            open(os.path.join(self.dir, "tests/unit", stem + ".c"), "w").close()
        open(os.path.join(self.dir, "tests/unit", "unit.h"), "w").close()
        self.fake("build/tests/test_one", "")
        self.fake("build/asan/tests/test_one", "")
        self.fake("build/tests/test_two", "")
        items = run.missing_unit_binaries(self.dir, ["tern", "asan"], None)
        self.assertEqual(statuses(items), [("FAIL", "unit[asan] test_two (build/asan/tests/test_two)")])
        self.assertEqual(run.missing_unit_binaries(self.dir, ["tern"], None), [])
        os.chmod(os.path.join(self.dir, "build/tests/test_two"), 0o644)     # not executable
        self.assertEqual(len(run.missing_unit_binaries(self.dir, ["tern"], None)), 1)


class StrictMode(unittest.TestCase):
    ITEMS = [("PASS", "unit[tern] test_x:test_a", ""),
             ("SKIP", "unit[tern] test_queue:test_memory_per_message", ""),
             ("SKIP", "unit[asan] test_queue:test_memory_per_message", ""),
             ("SKIP", "integration[asan] test_outbound.OutboundDelivery.test_x", "dnsmasq not installed")]

    def test_not_strict(self):
        self.assertEqual(run.enforce_strict(self.ITEMS, False), self.ITEMS)

    def test_strict(self):
        out = run.enforce_strict(self.ITEMS, True)
        self.assertEqual([st for st, _, _ in out], ["PASS", "SKIP", "SKIP", "FAIL"])
        self.assertIn("dnsmasq not installed", out[3][2])

    def test_allow_list_is_short_and_exact(self):
        self.assertLessEqual(len(run.ALLOWED_SKIPS), 4)
        for name in run.ALLOWED_SKIPS:
            self.assertNotRegex(name, r"[*?]", "allow-list entries are names, not patterns")
        out = run.enforce_strict([("SKIP", "unit[tern] test_queue:test_memory_per_message_2", "")], True)
        self.assertEqual(out[0][0], "FAIL")

    def test_known_bugs(self):
        known = {"integration test_x.C.test_bug": "the bug"}
        items = [("FAIL", "integration[tern] test_x.C.test_bug", "Traceback\nAssertionError: 2 != 1"),
                 ("PASS", "integration[asan] test_x.C.test_bug", ""),
                 ("FAIL", "integration[asan] test_x.C.test_other", "")]
        out = run.apply_known_bugs(items, known)
        self.assertEqual([st for st, _, _ in out], ["KNOWN", "FAIL", "FAIL"])
        self.assertIn("the bug", out[0][2])
        self.assertIn("remove its entry", out[1][2])
        # a known bug is not a skip strict mode refuses
        self.assertEqual(run.enforce_strict(out[:1], True)[0][0], "KNOWN")
        for name in run.KNOWN_BUGS:
            self.assertNotRegex(name, r"\[", "KNOWN_BUGS names carry no build label")

    def test_ci_variable(self):
        self.assertTrue(run.strict_from_env({"CI": "true"}))
        self.assertTrue(run.strict_from_env({"CI": "1"}))
        self.assertFalse(run.strict_from_env({"CI": ""}))
        self.assertFalse(run.strict_from_env({}))


if __name__ == "__main__":
    unittest.main()
