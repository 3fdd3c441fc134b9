"""
test_pipelining.py - PIPELINING (RFC 2920) over raw sockets.

Command groups in one write with replies in order, message content as the
first "command" of the next group, several transactions in one write, a
whole transaction including its content in one write, very long pipelined
input (thousands of commands while replies are read concurrently), and
pipelined recipients over the limit.
"""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402


class Pipelining(TernTestCase):
    # test_long_pipelined_input sends thousands of NOOPs: over the default
    # max_junk_commands (100), which test_limits.py covers
    TERN_OPTIONS = {"options": {"max_junk_commands": "10000"}}

    def test_group_then_content(self):
        u1, u2 = self.tern.fresh_user(), self.tern.fresh_user()
        tok = harness.token("pipe")
        with self.tern.session() as c:
            self.assertIn("PIPELINING", c.extensions)
            c.send("MAIL FROM:<sender@client.test>\r\nRCPT TO:<%s@%s>\r\nRCPT TO:<nosuchuser@%s>\r\n"
                   "RCPT TO:<%s@%s>\r\nDATA\r\n" % (u1, DOMAIN, DOMAIN, u2, DOMAIN))
            self.assertReply(c.read_reply(), 250, "2.1.0")
            self.assertReply(c.read_reply(), 250, "2.1.5")
            self.assertReply(c.read_reply(), 550, "5.1.1")
            self.assertReply(c.read_reply(), 250, "2.1.5")
            self.assertReply(c.read_reply(), 354)
            c.send(harness.dot_stuff(harness.simple_body(tok)) + b".\r\nNOOP\r\nQUIT\r\n")
            self.assertReply(c.read_reply(), 250, "2.0.0")
            self.assertReply(c.read_reply(), 250, "2.0.0")
            self.assertReply(c.read_reply(), 221, "2.0.0")
            self.assertTrue(c.wait_closed())
        self.tern.wait_for_token(tok, u1)
        self.tern.wait_for_token(tok, u2)

    def test_several_transactions_in_one_write(self):
        users = [self.tern.fresh_user() for _ in range(4)]
        toks = [harness.token("multi%d" % i) for i in range(4)]
        with self.tern.session() as c:
            c.send("MAIL FROM:<sender@client.test>\r\nRCPT TO:<%s@%s>\r\nDATA\r\n" % (users[0], DOMAIN))
            self.assertReply(c.read_reply(), 250, "2.1.0")
            self.assertReply(c.read_reply(), 250, "2.1.5")
            self.assertReply(c.read_reply(), 354)
            # content + end + the next transaction's commands, as RFC 2920 3.1 allows
            for i in range(4):
                batch = harness.dot_stuff(harness.simple_body(toks[i])) + b".\r\n"
                if i + 1 < 4:
                    batch += ("RSET\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<%s@%s>\r\nDATA\r\n"
                              % (users[i + 1], DOMAIN)).encode()
                c.send(batch)
                r = self.assertReply(c.read_reply(), 250, "2.0.0")
                self.assertTrue(harness.queue_id(r.text), r)
                if i + 1 < 4:
                    self.assertReply(c.read_reply(), 250, "2.0.0")   # RSET
                    self.assertReply(c.read_reply(), 250, "2.1.0")
                    self.assertReply(c.read_reply(), 250, "2.1.5")
                    self.assertReply(c.read_reply(), 354)
        for u, t in zip(users, toks):
            self.tern.wait_for_mail(u, 1, exact=True)
            self.tern.wait_for_token(t, u)

    def test_whole_transactions_in_one_write(self):
        # Not what RFC 2920 clients do (they wait for 354), but a server must
        # not lose or misplace input it has already buffered.
        users = [self.tern.fresh_user() for _ in range(3)]
        toks = [harness.token("whole%d" % i) for i in range(3)]
        batch = b""
        for u, t in zip(users, toks):
            batch += (b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<%s@%s>\r\nDATA\r\n" % (u.encode(), DOMAIN.encode())
                      + harness.dot_stuff(harness.simple_body(t)) + b".\r\n")
        batch += b"QUIT\r\n"
        with self.tern.session() as c:
            c.send(batch)
            for _ in users:
                self.assertReply(c.read_reply(), 250, "2.1.0")
                self.assertReply(c.read_reply(), 250, "2.1.5")
                self.assertReply(c.read_reply(), 354)
                r = self.assertReply(c.read_reply(), 250, "2.0.0")
                self.assertTrue(harness.queue_id(r.text), r)
            self.assertReply(c.read_reply(), 221, "2.0.0")
        for u, t in zip(users, toks):
            self.tern.wait_for_token(t, u)
            self.tern.wait_for_mail(u, 1, exact=True)

    def test_ehlo_in_pipeline_group(self):
        with self.tern.client() as c:
            c.greeting()
            c.send("EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<alice@%s>\r\nRSET\r\n" % DOMAIN)
            self.assertEqual(c.read_reply(check=False).code, 250)
            self.assertReply(c.read_reply(), 250, "2.1.0")
            self.assertReply(c.read_reply(), 250, "2.1.5")
            self.assertReply(c.read_reply(), 250, "2.0.0")

    def test_replies_in_order_with_errors(self):
        with self.tern.session() as c:
            lines = ["NOOP", "FOO", "MAIL FROM:<a@client.test>", "MAIL FROM:<b@client.test>",
                     "RCPT TO:<nosuchuser@%s>" % DOMAIN, "RCPT TO:<alice@%s>" % DOMAIN, "VRFY alice",
                     "EXPN team", "RSET", "DATA", "HELP"]
            want = [(250, "2.0.0"), (500, "5.5.1"), (250, "2.1.0"), (503, "5.5.1"), (550, "5.1.1"),
                    (250, "2.1.5"), (252, None), (502, "5.5.1"), (250, "2.0.0"), (503, "5.5.1"), (214, "2.0.0")]
            c.send("".join(l + "\r\n" for l in lines))
            for line, (code, enh) in zip(lines, want):
                self.assertReply(c.read_reply(), code, enh, line)

    def test_pipelined_recipients_over_limit(self):
        users = [self.tern.fresh_user() for _ in range(7)]
        tok = harness.token("plimit")
        with self.tern.session() as c:
            c.send("MAIL FROM:<sender@client.test>\r\n" +
                   "".join("RCPT TO:<%s@%s>\r\n" % (u, DOMAIN) for u in users) + "DATA\r\n")
            self.assertReply(c.read_reply(), 250, "2.1.0")
            for u in users[:5]:
                self.assertReply(c.read_reply(), 250, "2.1.5")
            for u in users[5:]:
                self.assertReply(c.read_reply(), 452, "4.5.3")
            self.assertReply(c.read_reply(), 354)
            c.send(harness.dot_stuff(harness.simple_body(tok)) + b".\r\n")
            self.assertReply(c.read_reply(), 250, "2.0.0")
        for u in users[:5]:
            self.tern.wait_for_token(tok, u)
        for u in users[5:]:
            self.assertNoMail(u)

    def test_duplicate_recipients_count_against_limit(self):
        # max_recipients (5 here) bounds accepted RCPT commands, duplicates
        # included: the same recipient sent over and over gets 452 4.5.3
        # after the fifth, and the message still arrives once.
        user = self.tern.fresh_user()
        tok = harness.token("pdup")
        with self.tern.session() as c:
            c.send("MAIL FROM:<sender@client.test>\r\n" +
                   "RCPT TO:<%s@%s>\r\n" % (user, DOMAIN) * 8 + "DATA\r\n")
            self.assertReply(c.read_reply(), 250, "2.1.0")
            for _ in range(5):
                self.assertReply(c.read_reply(), 250, "2.1.5")
            for _ in range(3):
                self.assertReply(c.read_reply(), 452, "4.5.3")
            self.assertReply(c.read_reply(), 354)
            c.send(harness.dot_stuff(harness.simple_body(tok)) + b".\r\n")
            self.assertReply(c.read_reply(), 250, "2.0.0")
        msgs = self.tern.wait_for_mail(user, 1, exact=True)
        self.assertEqual(sum(1 for m in msgs if tok.encode() in m), 1)

    def _concurrent(self, c, data, nreplies):
        """Write data while a thread reads nreplies replies (no deadlock on full buffers)."""
        replies, errors = [], []

        def reader():
            try:
                for _ in range(nreplies):
                    replies.append(c.read_reply())
            except Exception as e:   # reported below
                errors.append(e)
        t = threading.Thread(target=reader)
        t.start()
        try:
            c.send(data)
        finally:
            t.join(120)
        self.assertFalse(t.is_alive(), "reader still waiting after 120s (%d replies)" % len(replies))
        if errors:
            raise errors[0]
        return replies

    def test_long_pipelined_input(self):
        n = 5000
        with self.tern.session() as c:
            replies = self._concurrent(c, b"NOOP\r\n" * n + b"RSET\r\n", n + 1)
            self.assertTrue(all(r.code == 250 and r.enh == "2.0.0" for r in replies))
            self.assertReply(c.cmd("QUIT"), 221, "2.0.0")

    def test_long_pipelined_transactions(self):
        n = 50
        user = self.tern.fresh_user()
        toks = [harness.token("lp%d" % i) for i in range(n)]
        data = b""
        for t in toks:
            body = harness.simple_body(t)
            data += (b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<%s@%s>\r\nBDAT %d LAST\r\n"
                     % (user.encode(), DOMAIN.encode(), len(body)) + body)
        with self.tern.session() as c:
            replies = self._concurrent(c, data, 3 * n)
            for i in range(n):
                self.assertReply(replies[3 * i], 250, "2.1.0")
                self.assertReply(replies[3 * i + 1], 250, "2.1.5")
                self.assertReply(replies[3 * i + 2], 250, "2.0.0")
        msgs = self.tern.wait_for_mail(user, n, timeout=60, exact=True)
        for t in toks:
            self.assertEqual(sum(1 for m in msgs if t.encode() in m), 1, t)
