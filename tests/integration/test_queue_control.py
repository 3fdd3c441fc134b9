"""
test_queue_control.py - `tern queue ...` against a running tern.

Mail to foreign domains cannot be delivered here: `resolver` points at a
small UDP responder (below) that answers every query SERVFAIL at once, so
each attempt ends quickly as a temporary failure, and retry_min is an hour,
so nothing is retried by itself. Covered: list (table and --json), show,
hold (no attempt while held; still held after a restart of tern), release
(an attempt at once), flush (an attempt: a relay-job log line), delete (gone
from the list and the spool, logged), an unknown id (exit 1), tern not
running (exit 69), a user that is neither root nor the queue user (refused,
exit 1; needs root to switch to nobody), and a malformed request line on
the raw socket.

Only loopback; only processes started here are stopped, by PID.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from netfixtures import ServfailDNS, wait_for  # noqa: E402


class QueueControl(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        reason = harness.binary_missing_reason() or harness.root_users_missing_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.dns = ServfailDNS()
        cls.tern = harness.Tern(options={"retry_min": "1h", "max_recipients": "10"},
                                extra_config="resolver 127.0.0.1:%d" % cls.dns.port)
        try:
            cls.tern.start()
        except Exception:
            cls.tern.cleanup()
            cls.dns.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tern.cleanup()
        cls.dns.stop()

    def tearDown(self):
        rep = self.tern.sanitizer_report()
        if rep:
            self.fail("sanitizer report in tern's stderr:\n" + rep)

    # -- helpers
    def q(self, *args, user=None):
        cmd = [harness.tern_bin(), "queue"] + list(args) + ["-c", self.tern.conf]
        if user:
            cmd = ["setpriv", "--reuid=%s" % user, "--regid=nogroup", "--clear-groups"] + cmd
        p = subprocess.run(cmd, env=self.tern.env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        err = p.stderr.decode("utf-8", "replace")
        for pat in harness.SANITIZER_PATTERNS:
            self.assertNotIn(pat, err, err)
        return p.returncode, out, err

    def qjson(self, *args):
        rc, out, err = self.q(*(list(args) + ["--json"]))
        try:
            return rc, json.loads(out)
        except ValueError:
            self.fail("not JSON (rc %d): %r\nstderr: %s" % (rc, out, err))

    def entry(self, qid):
        rc, doc = self.qjson("list") if self.q_running() else (69, None)
        if rc == 69:
            return None   # just restarted: the queue is not listening yet
        self.assertEqual(rc, 0, doc)
        for m in doc["messages"]:
            if m["id"] == qid:
                return m
        return None

    def q_running(self):
        return os.path.exists(os.path.join(self.tern.spool, "control"))

    def log_count(self, pattern):
        return len(re.findall(pattern, self.tern.log_text()))

    def deferred_message(self, rcpts=None, sender="sender@client.test"):
        """Queue a message to foreign domains; wait until its first attempt
        is over (every recipient deferred). Returns its queue id."""
        tok = harness.token("qc")
        rcpts = rcpts or ["%s@remote.test" % tok]
        _, qid = self.tern.send(rcpts, sender=sender)
        ok = wait_for(lambda: (self.entry(qid) or {}).get("state") == "deferred")
        self.assertTrue(ok, "message %s never deferred; log tail:\n%s" % (qid, self.tern.stderr_tail(20)))
        return qid

    # -- tests
    def test_list_human_and_json(self):
        qid = self.deferred_message(["a@remote.test", "b@other-remote.test"], sender="list-sender@client.test")
        rc, doc = self.qjson("list")
        self.assertEqual(rc, 0)
        self.assertTrue(doc["ok"])
        m = [x for x in doc["messages"] if x["id"] == qid][0]
        self.assertEqual(m["sender"], "list-sender@client.test")
        self.assertEqual(m["recipients"], 2)
        self.assertEqual(m["pending"], 2)
        self.assertEqual(m["state"], "deferred")
        self.assertGreater(m["next_attempt"], time.time() + 1800)
        self.assertGreaterEqual(m["size_kib"], 1)
        self.assertLessEqual(abs(m["arrival"] - time.time()), 120)
        rc, out, err = self.q("list")
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("ID "), out)
        line = [l for l in out.splitlines() if l.startswith(qid)]
        self.assertEqual(len(line), 1, out)
        self.assertIn("<list-sender@client.test>", line[0])
        self.assertIn("2/2", line[0])
        self.assertIn("deferred", line[0])
        self.assertRegex(line[0], r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")

    def test_show(self):
        qid = self.deferred_message(["show1@remote.test", "show2@remote.test"])
        rc, doc = self.qjson("show", qid)
        self.assertEqual(rc, 0, doc)
        m = doc["message"]
        self.assertEqual(m["id"], qid)
        self.assertEqual(m["sender"], "sender@client.test")
        self.assertEqual(m["state"], "deferred")
        self.assertEqual([r["address"] for r in m["recipients"]], ["show1@remote.test", "show2@remote.test"])
        for r in m["recipients"]:
            self.assertEqual(r["state"], "deferred")
            self.assertEqual(r["attempts"], 1)
            self.assertIn("SERVFAIL", r["reply"])
            self.assertTrue(r["reply"].startswith("451 4.4.3"), r["reply"])
        rc, out, err = self.q("show", qid.upper())
        self.assertEqual(rc, 0, err)
        self.assertIn("<show1@remote.test>  deferred", out)
        self.assertIn("last reply: 451 4.4.3", out)
        self.assertIn("sender:       <sender@client.test>", out)

    def test_unknown_id_and_bad_usage(self):
        rc, out, err = self.q("show", "0123456789abcdef")
        self.assertEqual(rc, 1)
        self.assertIn("not found", err)
        for verb in ("delete", "hold", "release", "flush"):
            rc, doc = self.qjson(verb, "0123456789abcdef")
            self.assertEqual(rc, 1, verb)
            self.assertFalse(doc["ok"])
            self.assertEqual(doc["error"], "not found")
        rc, out, err = self.q("show", "nothex")
        self.assertEqual(rc, 64)
        rc, out, err = self.q("frobnicate")
        self.assertEqual(rc, 64)

    def test_flush_attempts_now(self):
        qid = self.deferred_message()
        jobs = self.log_count(r"id=%s event=relay-job" % qid)
        rc, doc = self.qjson("flush", qid)
        self.assertEqual(rc, 0, doc)
        self.assertEqual(doc["flushed"], 1)
        self.assertTrue(wait_for(lambda: self.log_count(r"id=%s event=relay-job" % qid) > jobs),
                        "no attempt after flush")
        self.assertTrue(wait_for(lambda: self.log_count(r"id=%s event=deferred .*attempts=2" % qid) >= 1))
        rc, out, err = self.q("flush")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"\d+ messages? flushed")

    def flushed_witness(self, ctl, flush_all=True):
        """Flush (all, or only the deferred message ctl) and wait until ctl's
        new attempt is out: by then a held message that the flush had
        wrongly taken would have its attempt out as well."""
        before = self.log_count(r"id=%s event=relay-job" % ctl)
        rc, doc = self.qjson(*(["flush"] if flush_all else ["flush", ctl]))
        self.assertEqual(rc, 0, doc)
        self.assertTrue(wait_for(lambda: self.log_count(r"id=%s event=relay-job" % ctl) > before),
                        "no attempt of %s after a flush" % ctl)

    def test_hold_survives_restart_then_release(self):
        qid = self.deferred_message()
        ctl = self.deferred_message()      # not held: shows when a flush has acted
        rc, out, err = self.q("hold", qid)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.entry(qid)["state"], "held")
        jobs = self.log_count(r"id=%s event=relay-job" % qid)
        # Held: flush does not touch it.
        rc, doc = self.qjson("flush", qid)
        self.assertEqual(rc, 1)
        self.flushed_witness(ctl)
        self.assertEqual(self.log_count(r"id=%s event=relay-job" % qid), jobs)
        # Durable: the journal says so after a restart.
        self.tern.restart()
        self.assertTrue(wait_for(lambda: (self.entry(qid) or {}).get("state") == "held"),
                        "not held after restart: %r" % self.entry(qid))
        rc, doc = self.qjson("show", qid)
        self.assertIsNotNone(doc["message"]["held_since"])
        self.assertTrue(wait_for(lambda: (self.entry(ctl) or {}).get("state") == "deferred"))
        self.flushed_witness(ctl, flush_all=False)
        self.assertEqual(self.log_count(r"id=%s event=relay-job" % qid), jobs)
        rc, out, err = self.q("release", qid)
        self.assertEqual(rc, 0, err)
        self.assertTrue(wait_for(lambda: self.log_count(r"id=%s event=relay-job" % qid) > jobs),
                        "no attempt after release")
        self.assertNotEqual(self.entry(qid)["state"], "held")

    def test_delete(self):
        qid = self.deferred_message()
        keep = self.deferred_message()
        self.assertIsNotNone(self.entry(qid))
        rc, doc = self.qjson("delete", qid)
        self.assertEqual(rc, 0, doc)
        self.assertTrue(doc["ok"])
        self.assertIsNone(self.entry(qid))
        self.assertTrue(wait_for(lambda: self.log_count(r"queue id=%s event=deleted by=admin" % qid) == 1))
        rc, out, err = self.q("show", qid)
        self.assertEqual(rc, 1)
        # Durable: after a restart it is still gone, the other one is not.
        self.tern.restart()
        self.assertTrue(wait_for(lambda: self.entry(keep) is not None))
        self.assertIsNone(self.entry(qid))

    def test_delete_while_relay_job_in_flight(self):
        # Delete right after the 250: the first attempt may still be out.
        tok = harness.token("qd")
        _, qid = self.tern.send(["%s@remote.test" % tok])
        rc, doc = self.qjson("delete", qid)
        self.assertEqual(rc, 0, doc)
        if self.log_count(r"id=%s event=relay-job" % qid):
            # the attempt was out: its result comes back for a deleted message
            self.assertTrue(wait_for(lambda: self.log_count(r"relay id=%s .*state=" % qid)),
                            "the relay never answered the job of %s" % qid)
            self.assertIsNone(self.tern.health_check())   # the queue has read the answer by now
        self.assertIsNone(self.entry(qid))
        self.assertFalse(os.path.exists(os.path.join(self.tern.spool, "queue", qid)))
        self.assertIsNone(self.tern.health_check())

    def test_raw_protocol_bounds(self):
        path = os.path.join(self.tern.spool, "control")
        # CONTROL_LINE_MAX (256) octets with the LF is the longest line;
        # 256 octets without an LF are too long already, LF or not to come
        for req, want in ((b"x" * 300 + b"\n", "too long"), (b"list extra\n", "bad request"),
                          (b"show 123\n", "bad request"), (b"x" * 255 + b"\n", "bad request"),
                          (b"x" * 254 + b"\r\n", "bad request"), (b"x" * 256 + b"\n", "too long"),
                          (b"x" * 256, "too long")):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(path)
            try:
                s.sendall(req)
            except OSError:
                pass
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            doc = json.loads(data)
            self.assertFalse(doc["ok"])
            self.assertIn(want, doc["error"])

    @unittest.skipUnless(harness.IS_ROOT, "needs root to run the client as nobody")
    def test_other_user_refused(self):
        rc, out, err = self.q("list", user="nobody")
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("permission denied", err)


class NotRunning(unittest.TestCase):
    def test_exit_69(self):
        reason = harness.binary_missing_reason()
        if reason:
            self.skipTest(reason)
        t = harness.Tern()
        try:
            p = subprocess.run([harness.tern_bin(), "queue", "list", "-c", t.conf], env=t.env(),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60)
            self.assertEqual(p.returncode, 69, p.stderr)
            self.assertIn(b"not running", p.stderr)
        finally:
            t.cleanup()


if __name__ == "__main__":
    unittest.main()
