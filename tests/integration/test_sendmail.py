"""
test_sendmail.py - `tern sendmail` (issue 5): the sendmail(8) command line
hands a message to the running daemon over its submit_socket.

The real binary is driven as cron and scripts do: from a shell with the
message piped in (`... | tern sendmail -t`), through a symlink named
`sendmail`, as an unprivileged user (runuser) when the suite runs as root.
What arrives is checked where it lands: the Maildir file of a local
recipient (Bcc: removed, Date:, Message-ID: and From: added exactly once,
the peer uid in Received:) and the transaction an aiosmtpd receiver
records for a remote recipient (MX found by dnsmasq, as in
test_outbound.py). Exit codes: 0 only after the 250; 75 when the daemon
is not running; 67 for a refused recipient (and nothing queued for the
others); 64 for bad usage; 65 for a bad address.
"""

import grp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import test_outbound  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402

RUNUSER = "/usr/sbin/runuser"


def header_block(msg):
    """The header of a stored message (bytes), up to the empty line."""
    return re.split(rb"\r?\n\r?\n", msg, maxsplit=1)[0]


def field_count(msg, name):
    return len(re.findall(rb"(?im)^" + re.escape(name.encode()) + rb"\s*:", header_block(msg)))


def field_value(msg, name):
    m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb"\s*:(.*(?:\r?\n[ \t].*)*)", header_block(msg))
    return m.group(1).strip().decode("utf-8", "replace") if m else None


class SendmailMixin:
    def sendmail(self, args, message, shell=False, argv0=None, user=None, timeout=60):
        """Run tern sendmail with -C the test config; returns CompletedProcess."""
        t = self.tern
        binary = argv0 or harness.tern_bin()
        base = [binary] + ([] if argv0 else ["sendmail"]) + ["-C", t.conf] + list(args)
        if user:
            base = [RUNUSER, "-u", user, "--"] + base
        if isinstance(message, str):
            message = message.encode("utf-8")
        env = t.env()
        env.pop("TERN_CONFIG", None)
        if shell:
            cmd = "printf '%%s' \"$MSG\" | %s" % " ".join("'%s'" % a for a in base)
            env["MSG"] = message.decode("utf-8")
            return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env, timeout=timeout, cwd=t.dir)
        return subprocess.run(base, input=message, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, timeout=timeout, cwd=t.dir)

    def assertExit(self, p, code, what=""):
        if p.returncode != code:
            self.fail("%s: exit %d, expected %d; stderr:\n%s\ntern log tail:\n%s" % (
                what, p.returncode, code, p.stderr.decode("utf-8", "replace"),
                self.tern.stderr_tail(10) if self.tern else ""))


class SendmailLocal(SendmailMixin, TernTestCase):
    """One tern; messages to local Maildirs."""

    def test_t_from_a_shell(self):
        tok = harness.token("sm")
        to, bcc = self.tern.fresh_user(), self.tern.fresh_user()
        msg = ("To: Some One <%s@%s>\nBcc: %s@%s\nSubject: %s\n\nbody of %s\n"
               % (to, DOMAIN, bcc, DOMAIN, tok, tok))
        p = self.sendmail(["-t"], msg, shell=True)
        self.assertExit(p, 0, "sendmail -t from a shell")
        self.assertEqual(p.stdout, b"")
        for user in (to, bcc):
            m = self.tern.wait_for_token(tok, user)
            self.assertEqual(field_count(m, "Bcc"), 0, "Bcc: kept for %s:\n%r" % (user, m))
            if user == to:
                # nothing in the To: recipient's copy names the Bcc recipient
                self.assertNotIn(("%s@%s" % (bcc, DOMAIN)).encode(), m,
                                 "the Bcc recipient shows in the To: recipient's copy")
            for name in ("From", "Date", "Message-ID", "To", "Subject"):
                self.assertEqual(field_count(m, name), 1, "%s: %s: not exactly once:\n%r" % (user, name, m))
            harness.parse_date(field_value(m, "Date"))
            self.assertRegex(field_value(m, "Message-ID"), r"^<[^<>@\s]+@%s>$" % re.escape(harness.HOSTNAME))
            self.assertIn("uid %d" % os.getuid(), field_value(m, "Received"))
            self.assertIn(b"\nbody of " + tok.encode(), harness.crlf_to_lf(m))
        self.assertRegex(self.tern.log_text(), r"event=local-submission uid=%d gid=\d+ pid=\d+" % os.getuid())

    def test_lone_cr_ends_a_line(self):
        # The daemon (bare_newline normalize) reads a lone CR as a line end:
        # the client must too, or a Bcc: behind one is delivered.
        tok = harness.token("sm")
        to, bcc = self.tern.fresh_user(), self.tern.fresh_user()
        msg = ("To: %s@%s\nSubject: %s\rBcc: %s@%s\r\n\nb\n" % (to, DOMAIN, tok, bcc, DOMAIN))
        p = self.sendmail(["-t"], msg)
        self.assertExit(p, 0, "sendmail -t, lone CR before Bcc:")
        for user in (to, bcc):
            m = self.tern.wait_for_token(tok, user)
            self.assertEqual(field_count(m, "Bcc"), 0, "Bcc: delivered to %s:\n%r" % (user, m))
            self.assertNotIn(b"\r\r", m)
            self.assertEqual(field_value(m, "Subject"), tok)

    def test_existing_fields_kept(self):
        tok = harness.token("sm")
        user = self.tern.fresh_user()
        msg = ("From: Me <me@client.test>\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
               "Message-ID: <%s@client.test>\nSubject: %s\n\nb\n" % (tok, tok))
        p = self.sendmail(["%s@%s" % (user, DOMAIN)], msg)
        self.assertExit(p, 0)
        m = self.tern.wait_for_token(tok, user)
        self.assertEqual(field_value(m, "From"), "Me <me@client.test>")
        self.assertEqual(field_value(m, "Message-ID"), "<%s@client.test>" % tok)
        self.assertEqual(field_count(m, "Date"), 1)
        self.assertEqual(field_count(m, "To"), 0, "sendmail must not invent a To:")

    def test_symlink_named_sendmail(self):
        tok = harness.token("sm")
        user = self.tern.fresh_user()
        d = tempfile.mkdtemp(prefix="tern-sm-", dir="/tmp")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o755)
        link = os.path.join(d, "sendmail")
        os.symlink(harness.tern_bin(), link)
        p = self.sendmail(["-i", "%s@%s" % (user, DOMAIN)], "Subject: %s\n\nb\n" % tok, argv0=link)
        self.assertExit(p, 0, "invoked as sendmail")
        self.tern.wait_for_token(tok, user)

    def test_f_and_F(self):
        tok = harness.token("sm")
        user = self.tern.fresh_user()
        p = self.sendmail(["-f", "robot@client.test", "-FJ\u00f6rg Robot", "%s@%s" % (user, DOMAIN)],
                          "Subject: %s\n\nb\n" % tok)
        self.assertExit(p, 0)
        m = self.tern.wait_for_token(tok, user)
        self.assertEqual(field_value(m, "Return-Path"), "<robot@client.test>")
        self.assertEqual(field_value(m, "From"), "=?UTF-8?B?SsO2cmcgUm9ib3Q=?= <robot@client.test>")

    def test_lone_dot(self):
        tok1, tok2 = harness.token("sm"), harness.token("sm")
        u1, u2 = self.tern.fresh_user(), self.tern.fresh_user()
        body = "Subject: %s\n\nbefore\n.\nafter-the-dot\n..two\n"
        p = self.sendmail(["%s@%s" % (u1, DOMAIN)], body % tok1)
        self.assertExit(p, 0, "without -i")
        m = harness.crlf_to_lf(self.tern.wait_for_token(tok1, u1))
        self.assertTrue(m.endswith(b"\n\nbefore\n"), "a lone dot must end the message: %r" % m)
        p = self.sendmail(["-oi", "%s@%s" % (u2, DOMAIN)], body % tok2)
        self.assertExit(p, 0, "with -oi")
        m = harness.crlf_to_lf(self.tern.wait_for_token(tok2, u2))
        self.assertTrue(m.endswith(b"\n\nbefore\n.\nafter-the-dot\n..two\n"), "-i: content changed: %r" % m)

    def test_refused_recipient_is_67_and_nothing_queued(self):
        tok = harness.token("sm")
        user = self.tern.fresh_user()
        p = self.sendmail(["%s@%s" % (user, DOMAIN), "nosuchuser@%s" % DOMAIN], "Subject: %s\n\nb\n" % tok)
        self.assertExit(p, 67, "unknown local user")
        err = p.stderr.decode()
        self.assertIn("nosuchuser@%s" % DOMAIN, err)
        self.assertIn("550 5.1.1", err, "the daemon's reply belongs in the message")
        self.assertNoMail(user)

    def test_usage_errors(self):
        p = self.sendmail(["-X", "a@%s" % DOMAIN], "x\n")
        self.assertExit(p, 64, "unknown option")
        self.assertIn(b"unknown option -X", p.stderr)
        p = self.sendmail([], "Subject: none\n\nb\n")
        self.assertExit(p, 64, "no recipients")
        p = self.sendmail(["-t"], "Subject: none\n\nb\n")
        self.assertExit(p, 64, "-t without recipient fields")
        self.assertIn(b"no recipients", p.stderr)
        p = self.sendmail(["Joe Smith"], "b\n")
        self.assertExit(p, 65, "a name is no address")
        p = self.sendmail(["-t"], "To: <broken@\n\nb\n")
        self.assertExit(p, 65, "bad To: with -t")

    def test_unprivileged_user(self):
        if not harness.IS_ROOT:
            self.skipTest("needs root to run the client as another user")
        if not os.access(RUNUSER, os.X_OK) or not harness.user_exists("nobody"):
            self.skipTest("runuser or user nobody missing")
        probe = subprocess.run([RUNUSER, "-u", "nobody", "--", harness.tern_bin(), "version"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if probe.returncode != 0:
            self.skipTest("user nobody cannot run %s: %s" % (harness.tern_bin(), probe.stderr[:200]))
        tok = harness.token("sm")
        user = self.tern.fresh_user()
        uid = harness.pwd.getpwnam("nobody").pw_uid
        p = self.sendmail(["-t"], "To: %s@%s\nSubject: %s\n\nb\n" % (user, DOMAIN, tok), user="nobody")
        self.assertExit(p, 0, "as nobody")
        m = self.tern.wait_for_token(tok, user)
        self.assertIn("(uid %d)" % uid, field_value(m, "Received"))
        self.assertEqual(field_value(m, "Return-Path"), "<nobody@%s>" % harness.HOSTNAME)
        self.assertRegex(self.tern.log_text(), r"event=local-submission uid=%d " % uid)
        st = os.stat(os.path.join(self.tern.dir, "submit.sock"))
        self.assertEqual(st.st_mode & 0o777, 0o666)


class SubmitGroup(SendmailMixin, TernTestCase):
    """submit_group: the socket is 0660 and that group's; the kernel keeps
    everyone else out (EX_NOPERM), root and the group's members get in."""
    TERN_OPTIONS = {"options": {"submit_group": "tern"}}

    def test_only_the_group_submits(self):
        if not harness.IS_ROOT:
            self.skipTest("submit_group applies when tern starts as root")
        if not os.access(RUNUSER, os.X_OK) or not harness.user_exists("nobody"):
            self.skipTest("runuser or user nobody missing")
        gid = grp.getgrnam("tern").gr_gid
        st = os.stat(os.path.join(self.tern.dir, "submit.sock"))
        self.assertEqual(st.st_mode & 0o777, 0o660)
        self.assertEqual(st.st_gid, gid)
        user = self.tern.fresh_user()
        tok = harness.token("grp")
        msg = "To: %s@%s\nSubject: %s\n\nb\n" % (user, DOMAIN, tok)
        p = self.sendmail(["-t"], msg, user="nobody")
        self.assertExit(p, 77, "nobody is not in group tern")
        self.assertIn(b"ermission denied", p.stderr)
        p = self.sendmail(["-t"], msg, user="tern")     # a member (its own group)
        self.assertExit(p, 0, "user tern, member of group tern")
        self.tern.wait_for_token(tok, user)


class SendmailNotRunning(SendmailMixin, TernTestCase):
    START = False

    def test_daemon_not_running_is_75(self):
        p = self.sendmail(["alice@%s" % DOMAIN], "Subject: x\n\nb\n")
        self.assertExit(p, 75, "no daemon")
        self.assertIn(b"cannot connect to " + os.path.join(self.tern.dir, "submit.sock").encode(), p.stderr)

    def test_submission_disabled_is_69(self):
        self.tern.options["submit_socket"] = "none"
        self.tern.write_config()
        try:
            p = self.sendmail(["alice@%s" % DOMAIN], "Subject: x\n\nb\n")
            self.assertExit(p, 69, "submit_socket none")
        finally:
            del self.tern.options["submit_socket"]
            self.tern.write_config()

    def test_stale_socket_replaced_and_removed_at_exit(self):
        import socket
        path = os.path.join(self.tern.dir, "submit.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()          # a socket file nobody listens on
        self.tern.start()
        try:
            tok = harness.token("sm")
            p = self.sendmail(["alice@%s" % DOMAIN], "Subject: %s\n\nb\n" % tok)
            self.assertExit(p, 0, "after replacing a stale socket")
            self.tern.wait_for_token(tok, "alice")
        finally:
            self.tern.stop()
        self.assertFalse(os.path.exists(path), "the socket outlived tern")


class SubmitSocketMode(SendmailMixin, TernTestCase):
    """The submit socket gets mode 0666 from the umask at bind(), whatever
    umask tern inherited, and its path is never chmod()ed (a chmod after
    bind() follows a symlink swapped in meanwhile)."""
    START = False

    def test_mode_by_umask_no_chmod(self):
        trace = os.path.join(self.tern.dir, "strace.out")
        path = os.path.join(self.tern.dir, "submit.sock")
        # strace -f follows the workers; only the file-mode calls are traced
        old = os.umask(0o077)
        try:
            self.tern.start_traced(trace, ["chmod", "fchmodat", "umask", "bind"])
        finally:
            os.umask(old)
        try:
            st = os.lstat(path)
            self.assertEqual(st.st_mode & 0o777, 0o666)
            tok = harness.token("sm")
            p = self.sendmail(["alice@%s" % DOMAIN], "Subject: %s\n\nb\n" % tok)
            self.assertExit(p, 0)
            self.tern.wait_for_token(tok, "alice")
        finally:
            self.tern.stop()
        with open(trace) as f:
            text = f.read()
        self.assertNotRegex(text, r"chmod(at)?\(.*submit\.sock", "the socket path was chmod()ed")
        self.assertRegex(text, r"umask\(0111\).*\n(.*\n)*?.*bind\(\d+, \{sa_family=AF_UNIX, sun_path=\"%s\"" %
                         re.escape(path))


def local_greeting(path, timeout=15.0):
    """Connect to the submit socket; returns (socket, first reply line)."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    buf = b""
    while b"\r\n" not in buf:
        d = s.recv(512)
        if not d:
            break
        buf += d
    return s, buf.split(b"\r\n")[0]


LOCAL_GREETING = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(15)
s.connect(sys.argv[1])
sys.stdout.write(s.recv(512).decode())
"""


class SubmitSocketLimit(TernTestCase):
    """max_connections_per_ip counts local submission clients by peer uid."""
    TERN_OPTIONS = {"options": {"max_connections_per_ip": "3", "max_connections": "50"}}

    def test_per_uid_limit(self):
        path = os.path.join(self.tern.dir, "submit.sock")
        held = []
        try:
            for _ in range(3):
                s, g = local_greeting(path)
                held.append(s)
                self.assertTrue(g.startswith(b"220 "), g)
            s, g = local_greeting(path)
            with s:
                self.assertTrue(g.startswith(b"421 4.7.0 "), g)
                self.assertIn(b"too many connections from your user", g)
                self.assertEqual(s.recv(512), b"", "refused connection not closed")
            self.assertRegex(self.tern.log_text(),
                             r"event=refused client=local uid=%d reason=max_connections_per_ip" % os.getuid())
            # another user is not affected
            if harness.IS_ROOT and os.access(RUNUSER, os.X_OK) and harness.user_exists("nobody"):
                p = subprocess.run([RUNUSER, "-u", "nobody", "--", "/usr/bin/python3", "-c",
                                    LOCAL_GREETING, path], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, timeout=30)
                self.assertTrue(p.stdout.startswith(b"220 "), (p.stdout, p.stderr))
            # the held ones still work; a freed slot can be used again
            held[0].sendall(b"NOOP\r\n")
            self.assertTrue(held[0].recv(512).startswith(b"250 "))
            held.pop(0).close()
            deadline = time.monotonic() + harness.WAIT
            while True:
                s, g = local_greeting(path)
                if g.startswith(b"220 "):
                    held.append(s)
                    break
                s.close()
                self.assertLess(time.monotonic(), deadline, "no slot freed: %r" % g)
                time.sleep(0.1)
        finally:
            for s in held:
                s.close()


class SendmailRemote(SendmailMixin, test_outbound.OutboundCase):
    """`tern sendmail -t` from a shell to one local and one remote
    recipient; the remote one's MX (dnsmasq) is an aiosmtpd receiver."""

    def test_t_local_and_remote(self):
        rcv = self.receiver("plain")
        tok = harness.token("sm")
        user = self.tern.fresh_user()
        msg = ("To: %s@%s, Far Away <far@plain.test>\nBcc: %s@%s\nSubject: %s\n\nline\n.dot line\n"
               % (user, DOMAIN, user, DOMAIN, tok))
        p = self.sendmail(["-t", "-i"], msg, shell=True)
        self.assertExit(p, 0, "sendmail -t to a local and a remote recipient")
        local = self.tern.wait_for_token(tok, user)
        tx = self.only_one(rcv, tok, what="remote recipient")
        self.assertEqual(tx.rcpts, ["far@plain.test"])
        self.assertEqual(tx.mail_from, "%s@%s" % (harness.pwd.getpwuid(os.getuid()).pw_name, harness.HOSTNAME))
        for what, m in (("local", local), ("remote", tx.data)):
            self.assertEqual(field_count(m, "Bcc"), 0, "%s: Bcc: kept" % what)
            for name in ("From", "Date", "Message-ID"):
                self.assertEqual(field_count(m, name), 1, "%s: %s not exactly once" % (what, name))
        self.assertEqual(field_value(local, "Message-ID"), field_value(tx.data, "Message-ID"))
        self.assertIn(b"\r\n.dot line\r\n", tx.data, "dot-stuffing lost a dot")
        self.assertEqual(tx.raw, test_outbound.receivers.dot_stuff(tx.data))


if __name__ == "__main__":
    unittest.main()
