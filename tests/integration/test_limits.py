"""
test_limits.py - connection limits, timeouts and queue trouble.

max_connections_per_ip and max_connections (the extra connection gets 421
and is closed; sources 127.0.0.x tell clients apart), the idle command
timeout (RFC 5321 4.5.3.2.7: 421 4.4.2, then close), the DATA block timeout,
and a spool that cannot be written (4xx: 451 4.3.0 or 452 4.3.1, nothing
acknowledged is lost, and mail flows again once the spool is writable).
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402


def greet(tern, source, expect_ok=True, timeout=15.0):
    """Connect from source; with expect_ok, retry 421s (slots of just-closed
    sessions may still be counted) until a 220 comes."""
    deadline = time.monotonic() + timeout
    while True:
        c = tern.client(source=source)
        g = c.greeting()
        if g.code == 220 or not expect_ok:
            return c, g
        c.close()
        if time.monotonic() > deadline:
            raise AssertionError("no 220 from %s within %.0fs: %r" % (source, timeout, g))
        time.sleep(0.1)


class PerIpLimit(TernTestCase):
    TERN_OPTIONS = {"options": {"max_connections_per_ip": "2", "max_connections": "50"}}

    def test_per_ip_limit(self):
        c1, _ = greet(self.tern, "127.0.0.1")
        c2, _ = greet(self.tern, "127.0.0.1")
        try:
            c3, g = greet(self.tern, "127.0.0.1", expect_ok=False)
            with c3:
                self.assertEqual(g.code, 421, g)
                harness.check_enhanced(g)
                self.assertEqual(g.enh, "4.7.0", g)
                self.assertTrue(c3.wait_closed(10), "extra connection not closed")
            # another address is not affected
            c4, g4 = greet(self.tern, "127.0.0.2")
            with c4:
                self.assertEqual(g4.code, 220)
                self.assertEqual(c4.ehlo().code, 250)
            # the first two still work
            self.assertEqual(c1.ehlo().code, 250)
            self.assertReply(c2.cmd("NOOP"), 250, "2.0.0")
        finally:
            c1.close()
        # a freed slot can be used again
        c5, _ = greet(self.tern, "127.0.0.1")
        c5.close()
        c2.close()


class TotalLimit(TernTestCase):
    TERN_OPTIONS = {"options": {"max_connections_per_ip": "10", "max_connections": "3"}}

    def test_total_limit(self):
        held = []
        try:
            for src in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
                held.append(greet(self.tern, src)[0])
            c4, g = greet(self.tern, "127.0.0.4", expect_ok=False)
            with c4:
                self.assertEqual(g.code, 421, g)
                harness.check_enhanced(g)
                self.assertIn(g.enh, ("4.3.2", "4.7.0"), g)
                self.assertTrue(c4.wait_closed(10))
            for c in held:
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            held.pop(0).close()
            c5, _ = greet(self.tern, "127.0.0.5")
            held.append(c5)
        finally:
            for c in held:
                c.close()


class IdleTimeout(TernTestCase):
    # timeout_greeting bounds the wait for EHLO/HELO, timeout_command every later command
    TERN_OPTIONS = {"options": {"timeout_command": "2s", "timeout_data": "3s", "timeout_greeting": "2s"}}

    def test_idle_after_greeting(self):
        with self.tern.client() as c:
            self.assertEqual(c.greeting().code, 220)
            c.sock.settimeout(60)
            r = c.read_reply()
            self.assertReply(r, 421, "4.4.2")
            self.assertTrue(c.wait_closed(10))

    def test_idle_after_ehlo(self):
        with self.tern.session() as c:
            c.sock.settimeout(60)
            self.assertReply(c.read_reply(), 421, "4.4.2")
            self.assertTrue(c.wait_closed(10))

    def test_idle_in_transaction(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            c.sock.settimeout(60)
            self.assertReply(c.read_reply(), 421, "4.4.2")
            self.assertTrue(c.wait_closed(10))

    def test_activity_keeps_session(self):
        with self.tern.session() as c:
            for _ in range(4):
                time.sleep(1.0)
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_stalled_data(self):
        user = self.tern.fresh_user()
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (user, DOMAIN)), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"Subject: stalled\r\n\r\nhalf a mess")
            c.sock.settimeout(60)
            self.assertReply(c.read_reply(), 421, "4.4.2")
            self.assertTrue(c.wait_closed(10))
        self.tern.wait_incoming_empty()
        self.assertNoMail(user)

    def test_slow_partial_line_is_one_command(self):
        # Dribbling a command byte by byte within the timeout is fine.
        with self.tern.session() as c:
            for b in b"NOOP\r\n":
                c.send(bytes([b]))
                time.sleep(0.05)
            self.assertReply(c.read_reply(), 250, "2.0.0")


class QueueFailure(TernTestCase):

    def _lock_spool(self, mode):
        """chmod every directory below the spool (not the spool itself)."""
        changed = []
        for root, dirs, files in os.walk(self.tern.spool):
            for d in dirs:
                p = os.path.join(root, d)
                changed.append((p, os.stat(p).st_mode & 0o7777))
                os.chmod(p, mode)
        return changed

    def test_unwritable_spool_gives_4xx(self):
        # As root, tern's queue process runs as user tern; as a plain user it is
        # us. Either way it is not root, so a read-only directory stops it.
        user = self.tern.fresh_user()
        tok0, _ = self.tern.send([user + "@" + DOMAIN])   # the spool exists and works
        self.tern.wait_for_token(tok0, user)
        changed = self._lock_spool(0o555)
        self.assertTrue(changed, "no directories in the spool to lock: %r" % os.listdir(self.tern.spool))
        try:
            tok = harness.token("qfail")
            with self.tern.session() as c:
                replies = []
                for line in ("MAIL FROM:<sender@client.test>", "RCPT TO:<%s@%s>" % (user, DOMAIN), "DATA"):
                    r = c.cmd(line)
                    replies.append(r)
                    if r.code >= 400:
                        break
                if r.code == 354:
                    c.send(harness.dot_stuff(harness.simple_body(tok)) + b".\r\n")
                    r = c.read_reply()
                    replies.append(r)
                self.assertIn((r.code, r.enh), ((451, "4.3.0"), (452, "4.3.1")), replies)
                self.assertReply(c.cmd("RSET"), 250, "2.0.0")
        finally:
            for p, mode in changed:
                os.chmod(p, mode)
        time.sleep(1.0)
        self.assertFalse(any(tok.encode() in m for m in self.tern.messages(user)), "refused message delivered")
        # nothing lost, and tern recovers without a restart
        deadline = time.monotonic() + 30
        while True:
            try:
                tok2, _ = self.tern.send([user + "@" + DOMAIN])
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.tern.wait_for_token(tok2, user)
        self.assertIn(tok0.encode(), b"".join(self.tern.messages(user)))

    def test_unwritable_maildir_keeps_message_queued(self):
        # A delivery failure is not a loss: the message is deferred and stays
        # queued, also across a restart. (When it is retried is tern's
        # schedule; the retry itself is not waited for here.)
        user = self.tern.fresh_user()
        base = self.tern.maildir_path(user)
        tok0, _ = self.tern.send([user + "@" + DOMAIN])
        self.tern.wait_for_token(tok0, user)
        dirs = [os.path.join(base, d) for d in ("tmp", "new")]
        modes = [(d, os.stat(d).st_mode & 0o7777) for d in dirs]
        for d in dirs:
            os.chmod(d, 0o555)
        try:
            tok, qid = self.tern.send([user + "@" + DOMAIN])
            time.sleep(1.5)
            self.assertFalse(any(tok.encode() in m for m in self.tern.messages(user)))
            self.assertTrue(self.tern.spool_files_containing(tok), "failed delivery dropped the message")
            self.assertTrue([l for l in self.tern.log_text().splitlines() if qid in l and "defer" in l],
                            "no deferral logged for %s" % qid)
        finally:
            for d, m in modes:
                os.chmod(d, m)
        self.tern.restart()
        time.sleep(1.0)
        delivered = any(tok.encode() in m for m in self.tern.messages(user))
        self.assertTrue(delivered or self.tern.spool_files_containing(tok),
                        "deferred message neither delivered nor queued after a restart")
        self.tern.wait_incoming_empty()
