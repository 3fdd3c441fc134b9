"""
test_processes.py - the process model and privileges (issue 2, part 4).

As root (skipped otherwise): the network process runs as tern-smtp,
chrooted (its /proc/PID/root is not /), with no root group; the queue
process runs as tern; no process of tern other than the parent keeps uid
0. Started as user nobody (setpriv), tern runs every role as nobody and
delivers. In every mode: a child that dies is restarted and mail flows
again; SIGTERM stops the parent and every child. ps names each process by
its role (tern: parent, smtp, queue, relay).
"""

import os
import pwd
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402


def ids(pid):
    st = harness.proc_status(pid)
    uids = [int(x) for x in st["Uid"].split()]
    gids = [int(x) for x in st["Gid"].split()]
    groups = [int(x) for x in st.get("Groups", "").split()]
    return uids, gids, groups


class Privileges(TernTestCase):

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("privilege separation is tested only when run as root")
        super().setUp()

    def test_children_users_and_chroot(self):
        t = self.tern
        smtp_uid = pwd.getpwnam("tern-smtp").pw_uid
        queue_uid = pwd.getpwnam("tern").pw_uid
        # The queue drops root only after creating and opening its
        # directories: wait (bounded) until both workers have settled.
        deadline = time.monotonic() + harness.WAIT
        while True:
            kids = t.children()
            settled = len(kids) >= 2 and all(ids(k)[0][0] != 0 for k in kids)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertGreaterEqual(len(kids), 2, "expected an smtp and a queue process, got %r" % kids)
        by_uid = {}
        for k in kids:
            uids, gids, groups = ids(k)
            self.assertEqual(len(set(uids)), 1, "pid %d real/effective/saved/fs uids differ: %r" % (k, uids))
            self.assertEqual(len(set(gids)), 1, "pid %d gids differ: %r" % (k, gids))
            by_uid.setdefault(uids[0], []).append(k)
            if uids[0] != 0:
                self.assertNotEqual(gids[0], 0, "pid %d kept gid 0" % k)
                self.assertNotIn(0, groups, "pid %d kept supplementary group 0" % k)
        self.assertIn(smtp_uid, by_uid, "no process runs as tern-smtp: %r" % by_uid)
        self.assertIn(queue_uid, by_uid, "no process runs as tern: %r" % by_uid)
        self.assertNotIn(0, by_uid, "a child process still runs as root: %r" % by_uid)
        for pid in by_uid[smtp_uid]:
            root = os.readlink("/proc/%d/root" % pid)
            self.assertNotEqual(root, "/", "smtp process %d is not chrooted" % pid)
            # the chroot is empty: nothing to read there
            self.assertEqual([x for x in os.listdir("/proc/%d/root/" % pid)], [],
                             "smtp chroot %s not empty" % root)
            st = harness.proc_status(pid)
            if "NoNewPrivs" in st:
                self.assertEqual(st["NoNewPrivs"], "1", "smtp process without no_new_privs")
            # the smtp process cannot reach the spool by path
            self.assertFalse(self._fd_paths(pid, t.spool), "smtp process holds spool fds")

    def test_only_smtp_process_has_client_sockets(self):
        t = self.tern
        smtp_uid = pwd.getpwnam("tern-smtp").pw_uid
        with t.session() as c:
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            local_port = c.sock.getsockname()[1]
            holder = self._socket_holders(t, local_port)
            self.assertTrue(holder, "no tern process holds the client connection")
            for pid in holder:
                self.assertEqual(ids(pid)[0][0], smtp_uid, "connection held by pid %d (not tern-smtp)" % pid)

    def _fd_paths(self, pid, prefix):
        out = []
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    p = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                if p.startswith(prefix):
                    out.append(p)
        except OSError:
            pass
        return out

    def _socket_holders(self, t, client_port):
        # find the inode of the server side of our connection in /proc/net/tcp
        inode = None
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                rem_port = int(parts[2].split(":")[1], 16)
                loc_port = int(parts[1].split(":")[1], 16)
                if rem_port == client_port and loc_port == t.port:
                    inode = parts[9]
        if inode is None:
            return []
        pids = [t.proc.pid] + t.children()
        return [p for p in pids if "socket:[%s]" % inode in self._fd_paths(p, "socket:")]


class ChildRestart(TernTestCase):

    def test_killed_children_are_restarted(self):
        t = self.tern
        kids = t.children()
        self.assertGreaterEqual(len(kids), 2, kids)
        for victim in kids:
            if not harness.pid_alive(victim):
                continue
            os.kill(victim, signal.SIGKILL)    # a descendant of the tern we started
            # the parent survives and mail flows again
            deadline = time.monotonic() + harness.WAIT
            user = t.fresh_user()
            while True:
                try:
                    tok, _ = t.send([user + "@" + DOMAIN])
                    break
                except (AssertionError, OSError, harness.ProtocolError) as e:
                    if time.monotonic() > deadline:
                        self.fail("no working tern %.0fs after killing child %d: %s\n%s"
                                  % (harness.WAIT, victim, e, t.stderr_tail()))
                    time.sleep(0.2)
            t.wait_for_token(tok, user)
            self.assertTrue(t.running(), "parent died after child %d was killed" % victim)
        self.assertTrue(set(t.children()) - set(kids), "no new child process")

    def test_sigterm_stops_everything(self):
        t = self.tern
        kids = t.children()
        with t.session() as c:        # an open session must not keep tern alive
            pgid = t.pgid
            rc = t.stop(timeout=20)
            self.assertTrue(c.wait_closed(), "client connection still open after shutdown")
        self.assertIn(rc, (0, -signal.SIGTERM, 128 + signal.SIGTERM), "exit status %r" % rc)
        self.assertFalse(t.orphans_after_stop, "children outlived the parent: %r" % t.orphans_after_stop)
        self.assertFalse([k for k in kids if harness.pid_alive(k)])
        self.assertFalse(harness.group_members(pgid))
        t.start()   # for tearDown and the next test


def title(pid):
    """The command line of pid as ps shows it: the arguments, NULs trimmed."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        raw = f.read()
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def comm(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().rstrip("\n")


class ProcessTitles(TernTestCase):
    """ps tells the roles apart: "tern: parent", "tern: smtp", "tern:
    queue", "tern: relay" (issue 9, part 1), in the command line and in the
    kernel's short name."""

    def test_titles_name_the_roles(self):
        t = self.tern
        want = ["tern: queue", "tern: relay", "tern: smtp"]
        deadline = time.monotonic() + 15
        while True:
            titles = {}
            for pid in t.children():
                try:
                    titles[pid] = title(pid)
                except OSError:
                    pass    # gone meanwhile
            if sorted(titles.values()) == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(sorted(titles.values()), want, "titles: %r" % titles)
        self.assertEqual(title(t.proc.pid), "tern: parent")
        self.assertEqual(comm(t.proc.pid), "tern: parent")
        for pid, name in titles.items():
            self.assertEqual(comm(pid), name, "pid %d" % pid)


class RunAsNobody(TernTestCase):
    NEEDS_TERN = False      # the test makes its own

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to start tern as nobody")
        if not shutil.which("setpriv"):
            self.skipTest("setpriv not installed")
        super().setUp()

    def test_non_root_run(self):
        t = harness.Tern(run_as="nobody")
        try:
            t.start()
            nobody = pwd.getpwnam("nobody").pw_uid
            for pid in [t.proc.pid] + t.children():
                self.assertEqual(ids(pid)[0][0], nobody, "pid %d not running as nobody" % pid)
            tok, _ = t.send(["alice@" + DOMAIN, "team@" + DOMAIN])
            m = t.wait_for_token(tok, "alice")
            t.wait_for_token(tok, "bob")
            self.assertIn(tok.encode(), m)
            st = os.stat(t.maildir_path("alice"))
            self.assertEqual(st.st_uid, nobody)
            t.stop()
            report = t.sanitizer_report()
            self.assertIsNone(report, report)
        finally:
            t.cleanup()
