"""
test_logrotate.py - log rotation: after the log file is moved away (as
logrotate does), SIGHUP makes every process (parent, smtp, queue, relay)
write to a new file at the configured path, and lines of the old
processes' activity stop going to the moved file. Connections and
queued mail are not disturbed.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402


class LogRotate(TernTestCase):

    def read(self, path):
        with open(path, errors="replace") as f:
            return f.read()

    def wait_in(self, path, needle, timeout=harness.WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(path) and needle in self.read(path):
                return
            time.sleep(0.05)
        self.fail("no %r in %s:\n%s" % (needle, path, self.read(path)[-2000:]
                                       if os.path.exists(path) else "(missing)"))

    def test_sighup_reopens_log_file_in_every_process(self):
        t = self.tern
        log = t.log_path
        self.assertTrue(log and os.path.exists(log))
        old = log + ".1"
        # an open session survives the rotation
        c = t.session()
        self.addCleanup(c.close)
        os.rename(log, old)
        os.kill(t.proc.pid, 1)                       # SIGHUP
        self.wait_in(log, "action=log-reopen result=ok")
        # every worker writes to the new file: smtp (a session), queue
        # (a delivery)
        user = t.fresh_user()
        tok = harness.token("rot")
        r = c.send_message("sender@client.test", ["%s@%s" % (user, DOMAIN)],
                           harness.simple_body(tok))
        self.assertReply(r, 250)
        qid = harness.queue_id(r.text)
        t.wait_for_token(tok, user)
        new = self.read(log)
        self.assertRegex(new, r"tern\[smtp \d+\] info: smtp session=\S+ event=")
        self.wait_in(log, "tern[queue ")
        self.wait_in(log, qid)
        # and nothing of it went to the moved file
        self.assertNotIn(qid, self.read(old))
        self.assertIn("event=sighup", self.read(log))
        # the session opened before the rotation goes on
        self.assertEqual(c.cmd("NOOP").code, 250)


if __name__ == "__main__":
    import unittest
    unittest.main()
