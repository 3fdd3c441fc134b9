"""
test_hostile.py - hostile bytes: NULs, binary garbage, endless lines, error floods.

Every byte from the network is hostile: tern must answer with 5xx replies
(enhanced codes checked by the harness), drop a session after max_errors
errors with 421 4.7.0, never crash (the harness fails the test on any
sanitizer report or if tern exits), and keep serving: every test ends by
delivering a normal message.
"""

import os
import random
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402


class Hostile(TernTestCase):
    TERN_OPTIONS = {"options": {"max_errors": "10"}}

    def tearDown(self):
        if self.tern is not None and self.tern.running():
            # tern still delivers a normal message after whatever the test did
            user = self.tern.fresh_user()
            tok, _ = self.tern.send([user + "@" + DOMAIN])
            self.tern.wait_for_token(tok, user)
        super().tearDown()

    def test_nul_in_commands(self):
        with self.tern.session() as c:
            for line in (b"NOOP\x00", b"\x00", b"MAIL\x00 FROM:<a@client.test>", b"EHLO a\x00b"):
                r = c.cmd(line)
                self.assertTrue(500 <= r.code < 600, "%r -> %r" % (line, r))
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            r = c.cmd(b"RCPT TO:<alice\x00@" + DOMAIN.encode() + b">")
            self.assertTrue(500 <= r.code < 600, r)
            r = c.cmd(b"RCPT TO:<alice@" + DOMAIN.encode() + b"\x00.evil.test>")
            self.assertTrue(500 <= r.code < 600, r)

    def test_error_limit_closes_with_421(self):
        with self.tern.session() as c:
            seen = []
            for i in range(20):
                try:
                    c.send(b"BOGUS\x00%d\r\n" % i)
                    r = c.read_reply()
                except (harness.ConnectionClosed, OSError):
                    break
                seen.append(r)
                if r.code == 421:
                    break
            self.assertTrue(seen and seen[-1].code == 421, seen)
            self.assertEqual(seen[-1].enh, "4.7.0", seen[-1])
            errors = [r for r in seen if r.code >= 500]
            self.assertTrue(all(500 <= r.code < 600 for r in seen[:-1]), seen)
            self.assertIn(len(errors), (9, 10, 11), "421 comes after max_errors (10) errors: %r" % seen)
            self.assertTrue(c.wait_closed(), "connection not closed after 421")

    def test_bare_lf_and_cr_commands_do_not_crash(self):
        with self.tern.session() as c:
            c.send(b"NOOP\nNOOP\rNOOP\r\r\n")
            c.send(b"HELP\r\n")
            # whatever the bare CR/LF lines got (5xx or 250), HELP's 214 comes last
            for _ in range(5):
                r = c.read_reply()
                self.assertTrue(r.code in (214, 250) or 500 <= r.code < 600, r)
                if r.code == 214:
                    break
            self.assertEqual(r.code, 214, c.replies)
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")

    def _blast(self, data, chunk=4096, timeout=120.0):
        """Send data and then QUIT, reading tern's replies all the while;
        returns (received, closed), closed meaning tern closed the
        connection before it answered the QUIT (221).

        The end is always tern closing the connection (EOF or reset), never
        a silence: a greeting can take seconds on a busy machine. A failed
        send (tern closed and reset) stops the sending only: the replies
        tern wrote before closing are still in our receive buffer and are
        read up to the EOF or the reset. The CRLF before the QUIT ends a
        partial line of data, so the QUIT is a command of its own."""
        s = socket.create_connection(("127.0.0.1", self.tern.port), timeout=30)
        s.setblocking(False)
        out = data + b"\r\nQUIT\r\n"
        received = b""
        pos = 0
        eof = False
        deadline = time.monotonic() + timeout
        try:
            while not eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.fail("tern neither closed the connection nor answered QUIT within %.0fs "
                              "(sent %d of %d bytes); received %r" % (timeout, pos, len(out), received[-300:]))
                r, w, _ = select.select([s], [s] if pos < len(out) else [], [], left)
                if r:
                    try:
                        b = s.recv(65536)
                    except BlockingIOError:
                        b = None
                    except ConnectionResetError:
                        b = b""
                    if b == b"":
                        eof = True
                    elif b:
                        received += b
                if w and not eof:
                    try:
                        pos += s.send(out[pos:pos + chunk])
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        pos = len(out)      # tern closed: read what it wrote before
        finally:
            s.close()
        replies = (b"\r\n" + received).split(b"\r\n221 ")
        return received, len(replies) == 1

    def _check_replies(self, received):
        lines = received.split(b"\r\n")
        if lines and lines[-1] != b"":
            lines = lines[:-1]   # a reply cut by a reset
        replies = []
        cur = []
        for l in lines:
            if not l:
                continue
            cur.append(l)
            if len(l) < 4 or l[3:4] != b"-":
                replies.append(harness.parse_reply_lines(cur))
                cur = []
        self.assertTrue(replies, "no reply at all: %r" % received[:200])
        self.assertEqual(replies[0].code, 220, replies[0])
        for i, r in enumerate(replies[1:], 1):
            harness.check_enhanced(r)
            if r.code == 221:      # the answer to _blast's QUIT, the last word
                self.assertEqual(i, len(replies) - 1, "replies after 221: %r" % replies[i:])
                continue
            self.assertTrue(r.code == 421 or 500 <= r.code < 600, r)
            if r.code == 421:
                self.assertEqual(i, len(replies) - 1, "replies after 421: %r" % replies[i:])
        return replies

    def _assert_error_limit(self, replies, closed):
        """At most max_errors (10) error replies, give or take the one the
        421 replaces and the one for the partial line before _blast's QUIT."""
        errors = [r for r in replies if r.code >= 500]
        self.assertLessEqual(len(errors), 11, "more than max_errors error replies without 421: %r"
                             % replies[-3:])
        if len(errors) >= 11:
            self.assertTrue(closed and replies[-1].code == 421, "no 421 after %d errors: %r"
                            % (len(errors), replies[-3:]))

    def test_binary_garbage(self):
        rnd = random.Random(20231218)
        for size in (1000, 64 * 1024, 1024 * 1024):
            data = rnd.randbytes(size)
            received, closed = self._blast(data)
            replies = self._check_replies(received)
            self._assert_error_limit(replies, closed)

    def test_garbage_with_line_breaks(self):
        rnd = random.Random(51764)
        parts = []
        for _ in range(40):
            n = rnd.randrange(0, 700)
            parts.append(bytes(rnd.choice(b"\x00\x01\x7f\x80\xff\r\nABCxyz :<>@.") for _ in range(n)))
            parts.append(b"\r\n")
        received, closed = self._blast(b"".join(parts))
        replies = self._check_replies(received)
        # 40 bad lines: the server gave up with 421 and closed before the
        # QUIT. (Closing with our bytes unread makes the kernel send a reset,
        # which may overtake the 421 on its way: then only the errors count.)
        self.assertTrue(closed, "server still open after 40 bad lines: %r" % replies[-3:])
        errors = [r for r in replies if r.code >= 500]
        self.assertTrue(replies[-1].code == 421 or len(errors) >= 9, replies[-3:])
        if replies[-1].code == 421:
            self.assertEqual(replies[-1].enh, "4.7.0", replies[-1])
        self._assert_error_limit(replies, closed)

    def test_endless_line_without_newline(self):
        # 4 MB of one "line": bounded buffer, one 500 5.5.2 (or 421) and no crash.
        data = b"MAIL FROM:<" + b"A" * (4 * 1024 * 1024)
        received, closed = self._blast(data, chunk=64 * 1024)
        replies = self._check_replies(received)
        self.assertGreaterEqual(len(replies), 2, "no reply to a 4 MB line: %r" % replies)
        self.assertTrue(replies[1].code == 421 or replies[1].enh == "5.5.2", replies[1])
        with self.tern.session() as c:
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_garbage_in_data_then_session_goes_on(self):
        rnd = random.Random(3030)
        user = self.tern.fresh_user()
        junk = rnd.randbytes(200000).replace(b"\r\n.\r\n", b"\r\n..\r\n")
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (user, DOMAIN)), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(junk + b"\r\n.\r\n")
            r = c.read_reply()
            # NULs, bare CRs and long lines: refused (5xx) or normalized and stored
            self.assertTrue(r.code == 250 or 500 <= r.code < 600, r)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_many_connections_opened_and_dropped(self):
        for i in range(100):
            s = socket.create_connection(("127.0.0.1", self.tern.port), timeout=10)
            if i % 3 == 0:
                s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\n")
            s.close()
        # a 421 while tern still counts the dropped sessions is retried
        with self.tern.session(busy_timeout=60) as c:
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_half_close_after_command(self):
        s = socket.create_connection(("127.0.0.1", self.tern.port), timeout=30)
        try:
            s.sendall(b"EHLO client.test\r\nNOOP\r\nQUIT\r\n")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        finally:
            s.close()
        self.assertIn(b"\r\n221 2.0.0", data)

    def test_peer_cannot_forge_log_lines(self):
        # Control bytes from the peer are quoted in the log (log_quote), so no
        # peer string starts a line of its own in the log file or stderr.
        quits = len(self.tern.log_lines("event=quit"))
        with self.tern.client() as c:
            c.greeting()
            c.send(b"EHLO a\rFORGED-LOG-1 event=x\r\n")
            c.read_reply(check=False)
            c.send(b"EHLO b\x1b[2Jx\r\n")
            c.read_reply(check=False)
            c.cmd(b"MAIL FROM:<a@client.test>")
            c.cmd(b"RCPT TO:<x\rFORGED-LOG-2@" + DOMAIN.encode() + b">")
            c.cmd(b"FOO\rFORGED-LOG-3 event=x")
            c.cmd("QUIT")
        self.tern.wait_log("event=quit", n=quits + 1)   # the session's lines are all written
        for path in (self.tern.log_path, self.tern.stderr_path):
            if not path or not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            for n in (1, 2, 3):
                for sep in (b"\r", b"\n"):
                    self.assertNotIn(sep + b"FORGED-LOG-%d" % n, data, "forged log line in %s" % path)
            self.assertNotIn(b"\x1b[2J", data, "raw escape sequence in %s" % path)
