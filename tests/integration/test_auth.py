"""
test_auth.py - SMTP AUTH for clients (RFC 4954, PLAIN RFC 4616 and LOGIN),
submission policy (RFC 6409) and per-listener relay control, against the
real tern binary.

tern listens twice: ports[0] is an MX listener without a block (the
defaults: no AUTH, relay only for relay_networks), ports[1] a submission
listener (`auth required`, `auth_plaintext yes` since TLS comes later,
`relay_networks no`). relay_networks is 10.0.0.0/8, so the test client on
127.0.0.1 is a stranger. The passwd file is written by `tern passwd`
itself (password on stdin), which must keep the addresses field.

Covered: EHLO offers AUTH only where it is enabled; MAIL before AUTH gets
530 5.7.0; smtplib login() with PLAIN and LOGIN; swaks --auth PLAIN and
LOGIN; a wrong password gets 535 5.7.8 and the right one then works; the
envelope sender and From: must be the user's (553 5.7.1); Date: and
Message-ID: are added to submitted mail; hostile recipient forms from an
unauthenticated client are never relayed on either listener; an
authenticated user's mail to a foreign domain reaches an aiosmtpd
receiver (a smarthost route on loopback); on a submission listener
without `auth_plaintext`, AUTH is neither offered nor accepted (538
5.7.11) before STARTTLS and works after it (smtplib, swaks --tls --auth),
with ESMTPSA in Received:; repeated failures from one
address get growing delays, then 421 and a refused address for
auth_throttle_time, while other addresses are served; the delay never
outlasts the command deadline (535, not 421 4.4.2, in clear text and over
STARTTLS).
"""

import os
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import receivers  # noqa: E402
from harness import DOMAIN, DOMAIN2, TernTestCase  # noqa: E402

ALICE = "alice@" + DOMAIN
ALICE_PW = "alice pass 1"
BOB = "bob"
BOB_PW = "b0b-secret"
SUBMISSION = "auth required\nauth_plaintext yes\nrelay_networks no"

HOSTILE = [
    "user@other.test", "user@OTHER.TEST", "user%other.test@" + DOMAIN,
    '"user@other.test"@' + DOMAIN, "user@other.test@" + DOMAIN,
    "@%s:user@other.test" % DOMAIN, "@a.test,@%s:user@other.test" % DOMAIN,
    "user@[127.0.0.1]", "user@[IPv6:::1]", "user@other.test.",
    "user@%s.other.test" % DOMAIN, "user!other.test@" + DOMAIN,
    "USER@OTHER.TEST", "user@other.test%" + DOMAIN,
]


class AuthTern(harness.Tern):
    """A Tern whose listeners may have blocks and which has a passwd file
    written with `tern passwd`."""

    def __init__(self, blocks=None, **kw):
        self.blocks = blocks or {}
        super().__init__(**kw)

    def config_text(self):
        text = super().config_text()
        for i, port in enumerate(self.ports):
            if self.blocks.get(i):
                text = text.replace("listen 127.0.0.1:%d\n" % port,
                                    "listen 127.0.0.1:%d {\n%s\n}\n" % (port, self.blocks[i]))
        pw = os.path.join(self.dir, "passwd")
        if not os.path.exists(pw):
            with open(pw, "w") as f:
                # bob's addresses must survive tern passwd
                f.write("# test users\n%s:!:bob@%s,@%s\n" % (BOB, DOMAIN, DOMAIN2))
            for user, password in ((ALICE, ALICE_PW), (BOB, BOB_PW)):
                r = subprocess.run([harness.tern_bin(), "passwd", user, pw],
                                   input=password + "\n", capture_output=True, text=True,
                                   env=self.env(), timeout=60)
                if r.returncode != 0:
                    raise AssertionError("tern passwd failed: %s %s" % (r.stdout, r.stderr))
        return text + "passwd_file %s\n" % pw


class AuthCase(TernTestCase):
    BLOCKS = {1: SUBMISSION}
    OPTIONS = {}
    EXTRA = ""

    @classmethod
    def setUpClass(cls):
        cls.tern = None
        cls._setup_error = None
        cls._skip_reason = harness.binary_missing_reason() or harness.root_users_missing_reason()
        if cls._skip_reason:
            return
        try:
            cls.before_start()
            cls.tern = AuthTern(blocks=cls.BLOCKS, listeners=2, relay_networks="10.0.0.0/8",
                                options=cls.OPTIONS, extra_config=cls.EXTRA)
            cls.tern.start()
        except Exception as e:
            cls._setup_error = "tern failed to start: %s" % e

    @classmethod
    def before_start(cls):
        pass

    @property
    def sub(self):
        return self.tern.ports[1]

    def login_session(self, user=ALICE, password=ALICE_PW, source=None, busy_timeout=15.0):
        c = self.tern.session(port=self.sub, source=source, busy_timeout=busy_timeout)
        self.assertReply(c.cmd("AUTH PLAIN " + plain(user, password)), 235, "2.7.0")
        return c


def plain(user, password, authzid=""):
    import base64
    return base64.b64encode(("%s\0%s\0%s" % (authzid, user, password)).encode()).decode()


def b64(s):
    import base64
    return base64.b64encode(s.encode()).decode()


class Submission(AuthCase):

    def test_ehlo_and_530(self):
        with self.tern.session() as c:
            self.assertNotIn("AUTH", c.extensions)
            self.assertReply(c.cmd("AUTH PLAIN " + plain(ALICE, ALICE_PW)), 503, "5.5.1")
        with self.tern.session(port=self.sub) as c:
            self.assertEqual(c.extensions.get("AUTH", "").split(), ["PLAIN", "LOGIN"])
            self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 530, "5.7.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 503, "5.5.1")

    def test_smtplib_plain_and_login(self):
        for mech in ("PLAIN", "LOGIN"):
            tok = harness.token(mech)
            user = self.tern.fresh_user()
            with self.tern.smtp(port=self.sub) as s:
                s.ehlo()
                s.esmtp_features["auth"] = mech
                code, _ = s.login(ALICE, ALICE_PW)
                self.assertEqual(code, 235)
                body = "From: Alice <%s>\r\nSubject: %s\r\n\r\nhello %s\r\n" % (ALICE, tok, tok)
                s.sendmail(ALICE, ["%s@%s" % (user, DOMAIN)], body)
            msg = harness.crlf_to_lf(self.tern.wait_for_token(tok, user))
            header = msg.split(b"\n\n", 1)[0]
            # RFC 6409 8.3, 8.6: added by the submission server
            self.assertIn(b"\nDate: ", header)
            self.assertIn(b"\nMessage-ID: <", header)

    def test_wrong_password_then_right(self):
        with self.tern.session(port=self.sub, source="127.0.0.5") as c:
            self.assertReply(c.cmd("AUTH PLAIN " + plain(ALICE, "nope")), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH LOGIN"), 334)
            self.assertReply(c.cmd(b64(BOB)), 334)
            self.assertReply(c.cmd(b64(BOB_PW)), 235, "2.7.0")
            self.assertReply(c.cmd("AUTH LOGIN"), 503, "5.5.1")
            # bob's addresses came through tern passwd
            self.assertReply(c.cmd("MAIL FROM:<anyone@%s>" % DOMAIN2), 250, "2.1.0")
            self.assertReply(c.cmd("RSET"), 250)
            self.assertReply(c.cmd("MAIL FROM:<bob@%s>" % DOMAIN), 250, "2.1.0")
        with self.tern.session(port=self.sub) as c:
            self.assertReply(c.cmd("AUTH PLAIN " + plain("nobody@" + DOMAIN, ALICE_PW)), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH PLAIN"), 334)
            self.assertReply(c.cmd("*"), 501, "5.7.0")
            self.assertReply(c.cmd("AUTH PLAIN =AAA"), 501, "5.5.2")

    def test_sender_ownership(self):
        with self.login_session() as c:
            r = c.cmd("MAIL FROM:<bob@%s>" % DOMAIN)
            self.assertReply(r, 553, "5.7.1")
            self.assertIn("not owned by user " + ALICE, r.text)
            self.assertReply(c.cmd("MAIL FROM:<alice%%other.test@%s>" % DOMAIN), 553, "5.7.1")
            # RFC 6409 4.2: the null sender is allowed
            self.assertReply(c.cmd("MAIL FROM:<>"), 250, "2.1.0")
            self.assertReply(c.cmd("RSET"), 250)
            for frm in ("bob@%s" % DOMAIN, '"Alice" <alice@%s>, bob@%s' % (DOMAIN, DOMAIN),
                        '"alice@%s" <mallory@evil.test>' % DOMAIN, "(alice@%s) mallory@evil.test" % DOMAIN):
                self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
                self.assertReply(c.cmd("RCPT TO:<bob@%s>" % DOMAIN), 250)
                self.assertReply(c.cmd("DATA"), 354)
                c.send("From: %s\r\nSubject: x\r\n\r\nbody\r\n.\r\n" % frm)
                r = c.read_reply()
                self.assertReply(r, 553, "5.7.1", msg=frm)
            self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
            self.assertReply(c.cmd("RCPT TO:<bob@%s>" % DOMAIN), 250)
            self.assertReply(c.cmd("DATA"), 354)
            c.send("From: =?utf-8?q?Al=C3=AFce?= <%s> (me)\r\n\r\nbody\r\n.\r\n" % ALICE)
            self.assertReply(c.read_reply(), 250, "2.0.0")

    def test_swaks(self):
        if not shutil.which("swaks"):
            self.skipTest("swaks not installed")
        for mech in ("PLAIN", "LOGIN"):
            tok = harness.token("swaks")
            user = self.tern.fresh_user()
            r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % self.sub, "--auth", mech,
                                "--auth-user", ALICE, "--auth-password", ALICE_PW,
                                "--from", ALICE, "--to", "%s@%s" % (user, DOMAIN),
                                "--helo", "client.test", "--header", "Subject: " + tok,
                                "--header", "From: " + ALICE],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("235 2.7.0", r.stdout)
            self.tern.wait_for_token(tok, user)
        r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % self.sub, "--auth", "PLAIN",
                            "--auth-user", ALICE, "--auth-password", "wrong",
                            "--from", ALICE, "--to", "bob@" + DOMAIN, "--helo", "client.test"],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("535 5.7.8", r.stdout)

    def test_no_relay_for_strangers(self):
        bad = []
        # MX listener: 127.0.0.1 is not in relay_networks
        for i in range(0, len(HOSTILE), 5):
            with self.tern.session() as c:
                self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
                for addr in HOSTILE[i:i + 5]:
                    r = c.cmd("RCPT TO:<%s>" % addr)
                    if r.code == 250:
                        bad.append("%s -> %r" % (addr, r))
        # submission listener: nothing without AUTH
        with self.tern.session(port=self.sub) as c:
            self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 530, "5.7.0")
            r = c.cmd("RCPT TO:<user@other.test>")
            self.assertNotEqual(r.code, 250)
        self.assertFalse(bad, "\n".join(bad))


class AuthRelay(AuthCase):
    """An authenticated user's mail to a foreign domain leaves through a
    smarthost route to an aiosmtpd receiver on loopback."""

    receiver = None

    @classmethod
    def before_start(cls):
        reason = receivers.aiosmtpd_missing_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.rport = harness.free_port()
        cls.rdir = __import__("tempfile").mkdtemp(prefix="tern-auth-rcv-")
        os.chmod(cls.rdir, 0o755)
        cls.receiver = receivers.Receiver("127.0.0.1", cls.rdir, port=cls.rport).start()
        cls.EXTRA = "route * { smarthost [127.0.0.1]:%d }" % cls.rport

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if cls.receiver is not None:
                cls.receiver.stop()
                shutil.rmtree(cls.rdir, ignore_errors=True)

    def test_authenticated_relay_delivered(self):
        tok = harness.token("relay")
        with self.login_session() as c:
            r = c.send_message(ALICE, ["someone@remote.test"],
                               ("From: %s\r\nSubject: %s\r\n\r\n%s\r\n" % (ALICE, tok, tok)).encode())
            self.assertReply(r, 250, "2.0.0")
        tx = self.receiver.wait_transactions(1, token=tok, timeout=60)
        self.assertEqual(tx[0].mail_from, ALICE)
        self.assertEqual(tx[0].rcpts, ["someone@remote.test"])
        # the same recipient from a stranger on the MX listener: refused
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
            self.assertReply(c.cmd("RCPT TO:<someone@remote.test>"), 554, "5.7.1")


class SubmissionOverTls(AuthCase):
    """The real submission set-up (RFC 6409 with RFC 3207 and RFC 4954 4):
    `auth required` without `auth_plaintext`, a certificate: AUTH is
    neither offered nor accepted before STARTTLS, and works after it; an
    authenticated user's mail to a foreign domain leaves through a
    smarthost, with ESMTPSA in its Received: field."""

    BLOCKS = {1: "auth required\nrelay_networks no"}
    receiver = None

    @classmethod
    def before_start(cls):
        import tempfile
        import tlsfixtures
        reason = receivers.aiosmtpd_missing_reason() or tlsfixtures.openssl_missing_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.rdir = tempfile.mkdtemp(prefix="tern-auth-tls-")
        os.chmod(cls.rdir, 0o755)
        cls.pki = tlsfixtures.Pki(cls.rdir)
        cert, key = cls.pki.issue(harness.HOSTNAME, ips=["127.0.0.1"])
        cls.OPTIONS = {"tls_certificate": cert, "tls_key": key}
        cls.rport = harness.free_port()
        cls.receiver = receivers.Receiver("127.0.0.1", cls.rdir, port=cls.rport).start()
        cls.EXTRA = "route * { smarthost [127.0.0.1]:%d }" % cls.rport

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if cls.receiver is not None:
                cls.receiver.stop()
                shutil.rmtree(cls.rdir, ignore_errors=True)

    def test_no_auth_before_tls(self):
        import smtplib
        s = smtplib.SMTP("127.0.0.1", self.sub, local_hostname="client.test", timeout=30)
        try:
            s.ehlo()
            self.assertTrue(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"), "AUTH offered in clear text")
            code, msg = s.docmd("AUTH", "PLAIN " + plain(ALICE, ALICE_PW))
            self.assertEqual(code, 538, msg)
            self.assertTrue(msg.startswith(b"5.7.11"), msg)
            code, msg = s.docmd("MAIL", "FROM:<%s>" % ALICE)
            self.assertEqual(code, 530, msg)
        finally:
            s.close()

    def test_smtplib_starttls_login_local(self):
        import smtplib
        import ssl
        tok = harness.token("subtls")
        user = self.tern.fresh_user()
        ctx = ssl.create_default_context(cafile=self.pki.ca_cert)
        s = smtplib.SMTP("127.0.0.1", self.sub, local_hostname="client.test", timeout=30)
        try:
            s._host = harness.HOSTNAME   # the name the certificate is for
            s.starttls(context=ctx)
            s.ehlo()
            self.assertEqual(s.esmtp_features.get("auth", "").split(), ["PLAIN", "LOGIN"])
            s.login(ALICE, ALICE_PW)
            s.sendmail(ALICE, ["%s@%s" % (user, DOMAIN)],
                       "From: %s\r\nSubject: %s\r\n\r\n%s\r\n" % (ALICE, tok, tok))
        finally:
            s.quit()
        data = self.tern.wait_for_token(tok, user)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        self.assertRegex(text, r"with ESMTPSA id ")
        self.assertRegex(text, r"\(using TLSv1\.[23] with cipher ")
        self.assertRegex(text, r"(?m)^Date: ")
        self.assertRegex(text, r"(?m)^Message-I[dD]: <")

    def test_swaks_tls_auth_relay(self):
        if not shutil.which("swaks"):
            self.skipTest("swaks not installed")
        if subprocess.run(["perl", "-MIO::Socket::SSL", "-e1"], capture_output=True).returncode:
            self.skipTest("swaks --tls needs libio-socket-ssl-perl (make deps)")
        tok = harness.token("swakstls")
        r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % self.sub, "--tls",
                            "--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", ALICE_PW,
                            "--from", ALICE, "--to", "someone@remote.test",
                            "--helo", "client.test", "--header", "Subject: " + tok,
                            "--header", "From: " + ALICE],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("235 2.7.0", r.stdout)
        tx = self.receiver.wait_transactions(1, token=tok, timeout=60)
        self.assertEqual(tx[0].mail_from, ALICE)
        self.assertEqual(tx[0].rcpts, ["someone@remote.test"])
        self.assertRegex(tx[0].data.decode("utf-8", "replace"), r"with ESMTPSA id ")


class Throttle(AuthCase):
    OPTIONS = {"auth_failure_delay": "1s", "auth_max_failures": "3", "auth_throttle_time": "5s",
               "max_errors": "10"}
    SRC = "127.0.0.2"

    def test_delay_then_421_then_refused(self):
        c = self.tern.session(port=self.sub, source=self.SRC)
        took = []
        for _ in range(2):
            t0 = time.monotonic()
            self.assertReply(c.cmd("AUTH PLAIN " + plain(ALICE, "guess")), 535, "5.7.8")
            took.append(time.monotonic() - t0)
        # the delay grows (1 s, then 2 s); loose bounds only
        self.assertGreaterEqual(took[0], 0.8)
        self.assertGreaterEqual(took[1], 1.6)
        self.assertGreater(took[1], took[0])
        r = c.cmd("AUTH PLAIN " + plain(ALICE, "guess"))
        self.assertReply(r, 421, "4.7.0")
        self.assertTrue(c.wait_closed())
        c.close()
        # the address is refused now, even for the right password ...
        with self.tern.client(port=self.sub, source=self.SRC) as c2:
            self.assertReply(c2.greeting(), 421)
        # ... but not on the MX listener, which offers no AUTH: a NAT or /64
        # shared with an attacker must not cut a legitimate MTA off
        with self.tern.client(source=self.SRC) as c2:
            self.assertReply(c2.greeting(), 220)
            self.assertReply(c2.ehlo("client.test"), 250)
            self.assertReply(c2.cmd("MAIL FROM:<someone@remote.test>"), 250)
            self.assertReply(c2.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250)
        # ... other addresses are not
        with self.login_session() as c3:
            self.assertReply(c3.cmd("NOOP"), 250)
        # and after auth_throttle_time (5 s) it may try again: session()
        # retries the 421 greetings until then
        with self.login_session(source=self.SRC, busy_timeout=harness.WAIT) as c4:
            self.assertReply(c4.cmd("NOOP"), 250)



class DelayVsDeadline(AuthCase):
    """The growing delay before a 535 never lets the session's command
    deadline fire first (issue 9: over TLS the client got 421 4.4.2 after
    a few failures): the delay stays under timeout_command and the wait is
    not counted as the client's. In clear text and after STARTTLS."""

    BLOCKS = {1: "auth required\nauth_plaintext yes\nrelay_networks no"}

    @classmethod
    def before_start(cls):
        import tempfile
        import tlsfixtures
        reason = tlsfixtures.openssl_missing_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.pkidir = tempfile.mkdtemp(prefix="tern-auth-delay-")
        cls.pki = tlsfixtures.Pki(cls.pkidir)
        cert, key = cls.pki.issue(harness.HOSTNAME, ips=["127.0.0.1"])
        # unbounded, the 4th delay would be 8 s, past the 3 s deadline
        cls.OPTIONS = {"tls_certificate": cert, "tls_key": key, "timeout_command": "3s",
                       "auth_failure_delay": "1s", "auth_max_failures": "20",
                       "max_errors": "20"}

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(getattr(cls, "pkidir", ""), ignore_errors=True)

    def _fail_often(self, docmd):
        for i in range(5):
            code, msg = docmd("AUTH", "PLAIN " + plain(ALICE, "guess %d" % i))
            self.assertEqual((code, msg[:5]), (535, b"5.7.8"), "attempt %d: %r" % (i, msg))
        code, msg = docmd("AUTH", "PLAIN " + plain(ALICE, ALICE_PW))
        self.assertEqual(code, 235, msg)
        self.assertEqual(docmd("NOOP")[0], 250)

    def test_clear_text(self):
        s = harness.CheckedSMTP("127.0.0.1", self.sub, source_address=("127.0.0.5", 0), timeout=60)
        try:
            s.ehlo()
            self._fail_often(s.docmd)
        finally:
            s.close()

    def test_starttls(self):
        import ssl
        ctx = ssl.create_default_context(cafile=self.pki.ca_cert)
        s = harness.CheckedSMTP("127.0.0.1", self.sub, source_address=("127.0.0.6", 0), timeout=60)
        try:
            s.ehlo()
            s.starttls(context=ctx)
            s.ehlo()
            self._fail_often(s.docmd)
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
