"""
test_relay_process.py - the relay process end to end in the real binary,
with the smallest real far side: dnsmasq serving the MX records, Postfix's
smtp-sink receiving on 127.0.N.2:25 (N from a /24 block held by a lock
file, above the blocks test_outbound.py uses), tern started as root (so the
relay runs chrooted as user_relay).

Covered: a message from a relay client to a foreign domain reaches the MX
byte for byte, in one transaction for both its recipients, and each
recipient's attempt is logged (queue id, MX host and IP, reply, state,
delay); when the first MX refuses connections the second one gets the
message (RFC 5321 5.1); a message queued under a larger max_message_size
than the relay's after a restart fails with 5.3.4 instead of restarting
the relay at every retry.

tests/integration/test_outbound.py is the full outbound suite; this file
needs only dnsmasq and smtp-sink. Skips without root, dnsmasq or
smtp-sink. Every process started here is stopped by PID.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from netfixtures import DNSMASQ, Dnsmasq, LoopbackBlock, spawn, stop_popen, wait_for  # noqa: E402

SMTP_SINK = "/usr/sbin/smtp-sink"


@unittest.skipUnless(os.geteuid() == 0, "needs root (port 25)")
@unittest.skipUnless(os.access(DNSMASQ, os.X_OK), "dnsmasq not installed")
@unittest.skipUnless(os.access(SMTP_SINK, os.X_OK), "smtp-sink not installed")
class RelayProcess(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        reason = harness.binary_missing_reason() or harness.root_users_missing_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.tern = cls.dns = cls.sink = None
        try:
            cls.block = LoopbackBlock(250, 255)
        except RuntimeError:
            raise unittest.SkipTest("no free 127.0.N.0/24 block")
        cls.mx_ip = cls.block.ip(2)
        cls.dead_ip = cls.block.ip(3)     # nothing listens here
        cls.workdir = tempfile.mkdtemp(prefix="tern-relay-", dir="/tmp")
        os.chmod(cls.workdir, 0o755)
        try:
            cls.dns = Dnsmasq([
                "--mx-host=dest.test,mx.dest.test,10",
                "--host-record=mx.dest.test,%s" % cls.mx_ip,
                "--mx-host=two.test,mx1.two.test,10",
                "--mx-host=two.test,mx2.two.test,20",
                "--host-record=mx1.two.test,%s" % cls.dead_ip,
                "--host-record=mx2.two.test,%s" % cls.mx_ip,
                "--mx-host=later.test,mx.later.test,10",
                "--host-record=mx.later.test,%s" % cls.dead_ip,
                # Dnsmasq.wait_ready() asks for two.test (its default probe)
            ], cls.workdir)
            cls.dns.start()
            cls.dump_dir = os.path.join(cls.workdir, "sink")
            os.mkdir(cls.dump_dir)
            os.chmod(cls.dump_dir, 0o777)
            cls.sink = spawn([SMTP_SINK, "-u", "nobody", "-D", os.path.join(cls.dump_dir, "dump"),
                              "%s:25" % cls.mx_ip, "100"],
                             os.path.join(cls.workdir, "sink.err"), "smtp-sink")
            cls.tern = harness.Tern(options={
                "resolver": "127.0.0.1:%d" % cls.dns.port,
                "allow_loopback_mx": "yes",
            })
            cls.tern.start()
            if not wait_for(lambda: "relay event=ready" in cls.log()):
                raise AssertionError("no relay event=ready in the log:\n" + cls.log()[-3000:])
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        report = None
        if cls.tern is not None:
            cls.tern.stop()
            report = cls.tern.sanitizer_report()
            cls.tern = None
        stop_popen(cls.sink)
        cls.sink = None
        if cls.dns is not None:
            cls.dns.stop()
            cls.dns = None
        shutil.rmtree(cls.workdir, ignore_errors=True)
        cls.block.release()
        if report:
            raise AssertionError("sanitizer report in tern stderr:\n%s" % report)

    @classmethod
    def log(cls):
        try:
            with open(cls.tern.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def dump(self):
        p = os.path.join(self.dump_dir, "dump")
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def submit(self, rcpts, body):
        with harness.SMTPClient(self.tern.port) as c:
            c.start()
            r = c.send_message("sender@client.test", rcpts, body)
            qid = harness.queue_id(r.text)
            c.cmd("QUIT", check=False)
        self.assertTrue(qid, "no queue id in %r" % r)
        return qid

    def test_delivered_to_mx(self):
        tok = harness.token()
        body = ("Subject: %s\r\n\r\nfirst line\r\n.dot line\r\nlast\r\n" % tok).encode()
        qid = self.submit(["alice@dest.test", "bob@dest.test"], body)
        delivered = lambda: len(re.findall(r"relay id=%s rcpt=\S+ .*state=delivered" % qid,
                                           self.log())) == 2
        self.assertTrue(wait_for(delivered), "not delivered; log:\n%s" % self.log()[-4000:])
        log = self.log()
        for rcpt in ("alice@dest.test", "bob@dest.test"):
            self.assertRegex(log, r"relay id=%s rcpt=%s mx=mx\.dest\.test ip=%s tls=none "
                             r"reply=\"250 2\.0\.0 \S*\" state=delivered delay=\d+s"
                             % (qid, re.escape(rcpt), re.escape(self.mx_ip)))
        # one transaction with both recipients, content intact (after the
        # Received: line tern prepends)
        dump = wait_for(lambda: tok.encode() in self.dump() and self.dump())
        msgs = [m for m in dump.split(b"X-Client-Addr:") if tok.encode() in m]
        self.assertEqual(len(msgs), 1, dump)
        m = msgs[0]
        self.assertIn(b"X-Rcpt-Args: <alice@dest.test>", m)
        self.assertIn(b"X-Rcpt-Args: <bob@dest.test>", m)
        self.assertIn(b"Subject: %s\n\nfirst line\n.dot line\nlast\n" % tok.encode(), m)

    def test_next_mx_when_first_refuses(self):
        tok = harness.token()
        qid = self.submit(["carol@two.test"], ("Subject: %s\r\n\r\nhi\r\n" % tok).encode())
        ok = r"relay id=%s rcpt=carol@two\.test mx=mx2\.two\.test ip=%s .*state=delivered" % (
            qid, re.escape(self.mx_ip))
        self.assertTrue(wait_for(lambda: re.search(ok, self.log())),
                        "not delivered; log:\n%s" % self.log()[-4000:])
        self.assertRegex(self.log(), r"relay id=%s event=connect-failed mx=mx1\.two\.test ip=%s"
                         % (qid, re.escape(self.dead_ip)))
        self.assertTrue(wait_for(lambda: tok.encode() in self.dump()))

    def test_queued_bigger_than_new_limit_fails(self):
        tok = harness.token()
        lines = [b"y" * 76] * 4000     # ~300 KB: under the class's 1M
        body = ("Subject: %s\r\n\r\n" % tok).encode() + b"\r\n".join(lines) + b"\r\n"
        qid = self.submit(["dave@later.test"], body)
        deferred = r"relay id=%s rcpt=dave@later\.test .*state=deferred" % qid
        self.assertTrue(wait_for(lambda: re.search(deferred, self.log())),
                        "not deferred; log:\n%s" % self.log()[-4000:])
        tern = self.__class__.tern
        tern.stop()
        tern.options["max_message_size"] = "100K"
        tern.write_config()
        try:
            tern.start()
            self.assertTrue(wait_for(lambda: self.log().count("relay event=ready") >= 2))
            p = subprocess.run([harness.tern_bin(), "queue", "flush", qid, "-c", tern.conf],
                               env=tern.env(), stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            failed = (r"relay id=%s rcpt=dave@later\.test mx=- ip=- tls=- reply=\"0 5\.3\.4 "
                      r"message\\x20larger\\x20than\\x20max_message_size\\x20\(102400\\x20bytes\)"
                      r"\" state=failed" % qid)
            self.assertTrue(wait_for(lambda: re.search(failed, self.log())),
                            "no 5.3.4 failure; log:\n%s" % self.log()[-4000:])
            # the relay carried on: no restart of it after the failure
            self.assertEqual(self.log().count("relay event=ready"), 2, self.log()[-4000:])
        finally:
            tern.stop()
            tern.options["max_message_size"] = "1M"
            tern.write_config()
            tern.start()
            wait_for(lambda: self.log().count("relay event=ready") >= 3)


if __name__ == "__main__":
    unittest.main()
