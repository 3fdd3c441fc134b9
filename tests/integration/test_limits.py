"""
test_limits.py - connection limits, timeouts and queue trouble.

max_connections_per_ip and max_connections (the extra connection gets 421
and is closed; sources 127.0.0.x tell clients apart), the idle command
timeout (RFC 5321 4.5.3.2.7: 421 4.4.2, then close), the DATA block timeout,
and a spool that cannot be written (4xx: 451 4.3.0 or 452 4.3.1, nothing
acknowledged is lost, and mail flows again once the spool is writable).

The slow drip (issue 9): timeouts are deadlines, not idle timers. A client
that sends a line, or its greeting, one octet at a time is cut at the
deadline with 421 4.4.2; message data slower than min_data_rate is cut
with 421 4.4.2; more than max_junk_commands NOOP/RSET/HELP/VRFY get 421
4.7.0. Forty such clients from four addresses fill every slot at once,
and a normal client still gets in and delivers. IPv6 clients count per
network of client_ipv6_prefix bits (/64 by default), in a network
namespace of the test's own whose loopback carries a few IPv6 addresses.
"""

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402


def greet(tern, source, expect_ok=True, timeout=harness.WAIT):
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
                self.assertTrue(c3.wait_closed(), "extra connection not closed")
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
                self.assertTrue(c4.wait_closed())
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
            self.assertTrue(c.wait_closed())

    def test_idle_after_ehlo(self):
        with self.tern.session() as c:
            c.sock.settimeout(60)
            self.assertReply(c.read_reply(), 421, "4.4.2")
            self.assertTrue(c.wait_closed())

    def test_idle_in_transaction(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            c.sock.settimeout(60)
            self.assertReply(c.read_reply(), 421, "4.4.2")
            self.assertTrue(c.wait_closed())

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
            self.assertTrue(c.wait_closed())
        self.tern.wait_incoming_empty()
        self.assertNoMail(user)

    def test_slow_partial_line_is_one_command(self):
        # Dribbling a command byte by byte within the timeout is fine.
        with self.tern.session() as c:
            for b in b"NOOP\r\n":
                c.send(bytes([b]))
                time.sleep(0.05)
            self.assertReply(c.read_reply(), 250, "2.0.0")


class Dripper:
    """One hostile client: a few commands at once, then `drip` an octet
    (or, with whole=True, a whole line) per tick, never finishing."""

    def __init__(self, tern, source, setup, drip, whole=False):
        self.c, g = greet(tern, source)
        for line in setup:
            r = self.c.ehlo(line[5:]) if line.startswith("EHLO ") else self.c.cmd(line)
            if r.code >= 400:
                raise AssertionError("%s: %r" % (line, r))
        self.drip = drip
        self.whole = whole
        self.sent = 0            # octets (or lines) of drip sent
        self.reply = None        # the 421, once it came
        self.closed = False
        self.c.sock.setblocking(False)

    def tick(self):
        if self.closed or self.sent >= len(self.drip):
            return
        data = self.drip[self.sent] if self.whole else self.drip[self.sent:self.sent + 1]
        try:
            self.c.sock.send(data)
            self.sent += 1
        except (BlockingIOError, OSError):
            pass

    def poll(self):
        """Read what tern sent; True once the connection is closed."""
        while not self.closed:
            try:
                chunk = self.c.sock.recv(4096)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.c.buf += chunk
        if self.reply is None:
            for line in self.c.buf.split(b"\r\n"):
                if line.startswith(b"421 "):
                    self.reply = harness.parse_reply_lines([line])
        return self.closed


class SlowDrip(TernTestCase):
    """Forty slow clients from 127.0.0.10-13 hold every slot
    (max_connections 40); none may keep it past its deadline."""

    TERN_OPTIONS = {"options": {
        "timeout_greeting": "3s", "timeout_command": "3s", "timeout_data": "3s",
        "min_data_rate": "100", "max_junk_commands": "5",
        "max_connections": "40", "max_connections_per_ip": "10"}}
    SOURCES = ["127.0.0.%d" % i for i in range(10, 14)]

    def _drippers(self):
        # a line long enough that sending it at one octet per second takes
        # far longer than any deadline here
        pad = b"x" * 60
        kinds = [
            # the greeting: timeout_greeting bounds the whole EHLO
            ([], b"EHLO " + pad + b"\r\n", False, "4.4.2"),
            # a command line
            (["EHLO drip.test"], b"MAIL FROM:<" + pad + b"@client.test>\r\n", False, "4.4.2"),
            # message data under min_data_rate
            (["EHLO drip.test", "MAIL FROM:<drip@client.test>",
              "RCPT TO:<alice@%s>" % DOMAIN, "DATA"],
             b"Subject: drip\r\n\r\n" + pad + b"\r\n.\r\n", False, "4.4.2"),
            # whole commands that move no mail, each within the deadline
            (["EHLO drip.test"], [b"NOOP\r\n", b"RSET\r\n", b"HELP\r\n", b"VRFY x\r\n"] * 15,
             True, "4.7.0"),
        ]
        out = []
        for i in range(40):
            setup, drip, whole, enh = kinds[i % 4]
            if setup and setup[-1] == "DATA":
                d = Dripper(self.tern, self.SOURCES[i // 10], setup[:-1], drip)
                d.c.sock.setblocking(True)
                self.assertReply(d.c.cmd("DATA"), 354)
                d.c.sock.setblocking(False)
            else:
                d = Dripper(self.tern, self.SOURCES[i // 10], setup, drip, whole)
            d.want = enh
            out.append(d)
        return out

    def _normal_delivery(self, user):
        """One attempt: None if the server is full (421), else the token."""
        c = self.tern.client(source="127.0.0.20")
        with c:
            if c.greeting().code != 220:
                return None
            self.assertEqual(c.ehlo().code, 250)
            tok = harness.token("normal")
            r = c.send_message("sender@client.test", [user + "@" + DOMAIN], harness.simple_body(tok))
            self.assertReply(r, 250, "2.0.0")
            return tok

    def test_many_slow_clients(self):
        user = self.tern.fresh_user()
        drippers = self._drippers()
        tok = None
        try:
            # generous: the deadlines are 3 s; the payloads last 60 s or more
            start = time.monotonic()
            deadline, next_tick = start + 50, start
            while time.monotonic() < deadline:
                now = time.monotonic()
                if now >= next_tick:      # one octet (or line) a second
                    for d in drippers:
                        d.tick()
                    next_tick += 1.0
                    if tok is None:
                        tok = self._normal_delivery(user)
                live = [d.c.sock for d in drippers if not d.closed]
                select.select(live, [], [], max(0.0, next_tick - time.monotonic()))
                for d in drippers:
                    d.poll()
                if tok is not None and all(d.closed for d in drippers):
                    break
            for i, d in enumerate(drippers):
                self.assertTrue(d.closed, "dripper %d (%r) still connected after %d octets"
                                % (i, d.drip[:12], d.sent))
                self.assertIsNotNone(d.reply, "dripper %d: closed without a 421: %r" % (i, d.c.buf[-200:]))
                self.assertEqual((d.reply.code, d.reply.enh), (421, d.want), "dripper %d" % i)
                harness.check_enhanced(d.reply)
                self.assertLess(d.sent, len(d.drip), "dripper %d finished before the deadline" % i)
            self.assertIsNotNone(tok, "a normal client never got in")
        finally:
            for d in drippers:
                d.c.close()
        self.tern.wait_for_token(tok, user)
        log = self.tern.log_text()
        for reason in ("reason=timeout stage=greeting", "reason=timeout stage=command",
                       "reason=slow-data", "reason=junk-commands"):
            self.assertIn(reason, log)


class JunkCommands(TernTestCase):
    """The default max_junk_commands is 100; a queued message resets the
    count (as Postfix does)."""

    def test_default_limit(self):
        user = self.tern.fresh_user()
        with self.tern.session() as c:
            for i in range(100):
                self.assertReply(c.cmd(("NOOP", "RSET", "HELP", "VRFY x")[i % 4]), (250, 250, 214, 252)[i % 4])
            self.assertReply(c.send_message("sender@client.test", [user + "@" + DOMAIN],
                                            harness.simple_body(harness.token("junk"))), 250, "2.0.0")
            for _ in range(99):
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.cmd("NOOP"), 421, "4.7.0")
            self.assertTrue(c.wait_closed())


# the IPv6 addresses of the namespace's loopback: tern's, then clients'
V6_TERN = "2001:db8:1:2::1"
V6_SAME_NET = ["2001:db8:1:2::10", "2001:db8:1:2::11", "2001:db8:1:2::12"]
V6_OTHER_NET = "2001:db8:1:3::10"


class Ipv6Clients(TernTestCase):
    """max_connections_per_ip counts an IPv6 client by its /64: one host
    usually holds the whole network and could take a fresh address for
    each connection. client_ipv6_prefix 128 counts addresses."""

    NEEDS_TERN = False

    def _in_netns(self):
        env = dict(os.environ)
        env["TERN_IN_NETNS"] = "1"
        env["TERN_BIN"] = harness.tern_bin()
        setup = ["ip link set lo up"] + ["ip -6 addr add %s/128 dev lo nodad" % a
                                         for a in [V6_TERN, V6_OTHER_NET] + V6_SAME_NET]
        p = subprocess.run(["unshare", "--net", "--", "sh", "-c", " && ".join(setup) +
                            " && exec /usr/bin/python3 -m unittest -v "
                            "test_limits.Ipv6Clients.test_per_network_limit"],
                           cwd=os.path.dirname(os.path.abspath(__file__)), env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=240)
        out = p.stdout.decode("utf-8", "replace")
        m = re.search(r"skipped '(.*)'", out)
        if p.returncode == 0 and m:
            self.skipTest("in a network namespace: " + m.group(1))
        self.assertEqual(p.returncode, 0, "the test in a network namespace failed:\n" + out)

    def _greet(self, port, source):
        c = harness.SMTPClient(port, host=V6_TERN, source=source)
        return c, c.greeting()

    def _run(self, prefix, third_code):
        port6 = harness.free_port()
        opts = {"max_connections_per_ip": "2", "max_connections": "50"}
        if prefix:
            opts["client_ipv6_prefix"] = prefix
        t = harness.Tern(options=opts, extra_config="listen [%s]:%d" % (V6_TERN, port6))
        held = []
        try:
            t.start()
            for src in V6_SAME_NET[:2]:
                c, g = self._greet(port6, src)
                held.append(c)
                self.assertEqual(g.code, 220, (src, g))
            c, g = self._greet(port6, V6_SAME_NET[2])
            held.append(c)
            self.assertEqual(g.code, third_code, g)
            if third_code == 421:
                self.assertEqual(g.enh, "4.7.0", g)
                self.assertTrue(c.wait_closed())
                self.assertIn("client=%s reason=max_connections_per_ip" % V6_SAME_NET[2],
                              t.log_text())
            c, g = self._greet(port6, V6_OTHER_NET)     # another /64
            held.append(c)
            self.assertEqual(g.code, 220, g)
            self.assertEqual(c.ehlo().code, 250)
        finally:
            for c in held:
                c.close()
            t.stop()
            self.assertIsNone(t.sanitizer_report())
            t.cleanup()

    def test_per_network_limit(self):
        if not os.environ.get("TERN_IN_NETNS"):
            if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
                self.skipTest("a network namespace with IPv6 addresses needs root, unshare and ip")
            return self._in_netns()
        reason = harness.binary_missing_reason() or harness.root_users_missing_reason()
        if reason:
            self.skipTest(reason)
        self._run(None, 421)      # the default: /64
        self._run("128", 220)


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
        # The segment log is open already: what needs a new file is a body
        # over spool_inline_max (256 KiB), which goes to spool/big/.
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
                    big = b"\r\n".join([b"b" * 76] * 4000)      # ~300 KB
                    c.send(harness.dot_stuff(harness.simple_body(tok, extra=big)) + b".\r\n")
                    r = c.read_reply()
                    replies.append(r)
                self.assertIn((r.code, r.enh), ((451, "4.3.0"), (452, "4.3.1")), replies)
                self.assertReply(c.cmd("RSET"), 250, "2.0.0")
        finally:
            for p, mode in changed:
                os.chmod(p, mode)
        self.tern.wait_settled()
        self.assertFalse(any(tok.encode() in m for m in self.tern.messages(user)), "refused message delivered")
        # nothing lost, and tern recovers without a restart
        deadline = time.monotonic() + harness.WAIT
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
            self.tern.wait_log(qid, "event=deferred")
            self.assertFalse(any(tok.encode() in m for m in self.tern.messages(user)))
            self.assertTrue(self.tern.spool_files_containing(tok), "failed delivery dropped the message")
        finally:
            for d, m in modes:
                os.chmod(d, m)
        recovered = len(self.tern.log_lines("queue event=recovered"))
        self.tern.restart()
        self.tern.wait_log("queue event=recovered", n=recovered + 1)
        delivered = any(tok.encode() in m for m in self.tern.messages(user))
        self.assertTrue(delivered or self.tern.spool_files_containing(tok),
                        "deferred message neither delivered nor queued after a restart")
        self.tern.wait_incoming_empty()
