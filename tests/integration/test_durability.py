"""
test_durability.py - the durability promises (DEVELOPERS.md: "250 only
after the message is on disk and fsync'ed (file and directory)").

DiskFull: the spool and the Maildirs each on a small filesystem of their
own (tmpfs with a size= limit, mounted by the test as root under tern's
test directory and unmounted after it; skipped, with that reason, only
when not root). The spool's log has 8 MiB segments and room for one: with
the Maildirs full, accepted messages are deferred and pile up in the
segment until its normal room is used and no second segment can be made:
from then on the client gets a 4xx with an enhanced status (452 4.3.1, or
451 4.3.0), never a 5xx and never a 250 for a message tern could not
store. Then the Maildirs get space while the spool has none left at all:
the deliveries are recorded in the segment's reserve (docs/spool-format.md),
so the full spool drains; then the spool gets space too: every
acknowledged message is delivered, tern answers throughout, and no
refused message is ever delivered.

FsyncBeforeAck: tern runs under `strace -f`; for each message the queue
process's write of its MSG record to spool/seg/<n>.seg, the fdatasync of
that segment after it, and the fsync of spool/seg/ after the segment was
made, all return before the smtp process writes "250 ... queued as <id>"
to the client. strace stops each thread at every traced syscall and
resumes it only after writing the line, so the order of the lines in its
output is the order in which the calls happened (a causal chain: fsync
returns, the queue answers the smtp process, that one writes the 250).
"""

import errno
import os
import re
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402

FS_SIZE = "16m"       # the Maildirs: room for all that the spool takes
SPOOL_FS_SIZE = "12m" # one 8 MiB segment and no second
BODY_KIB = 48         # a message is about this big: ~150 fill a segment
SPOOL_LEFT = 200 * 1024
MAX_MESSAGES = 400    # more than enough to fill the segment's normal room


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tern-test", path],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if p.returncode != 0:
        raise AssertionError("mount -t tmpfs on %s failed: %s" % (path, p.stdout.decode("utf-8", "replace")))


def umount(path):
    if os.path.ismount(path):
        p = subprocess.run(["umount", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        if p.returncode != 0:     # still busy: detach it, the kernel frees it when it can
            subprocess.run(["umount", "-l", path], stdin=subprocess.DEVNULL, timeout=60)


def fill(path):
    """Write path until its filesystem is full (ENOSPC); returns its size."""
    chunk = b"\0" * 65536
    n = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
            if n > 1 << 30:
                raise AssertionError("%s: no ENOSPC after 1 GiB: the size limit did not hold" % path)
    return n


def free_space(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class DiskFull(TernTestCase):
    START = False
    TERN_OPTIONS = {"options": {"retry_min": "1s", "retry_max": "2s", "max_message_size": "1M",
                                "spool_segment_size": "8M"}}
    mounts = []

    @classmethod
    def setUpClass(cls):
        cls.mounts = []
        super().setUpClass()
        if cls._skip_reason or cls._setup_error:
            return
        if not harness.IS_ROOT:
            cls._skip_reason = "needs root to mount the small tmpfs filesystems"
            return
        t = cls.tern
        try:
            for name, size in (("spoolfs", SPOOL_FS_SIZE), ("mailfs", FS_SIZE)):
                d = os.path.join(t.dir, name)
                mount_tmpfs(d, size)
                cls.mounts.append(d)
            t.spool = os.path.join(t.dir, "spoolfs", "spool")
            t.mail = os.path.join(t.dir, "mailfs", "mail")
            t.write_config()
            t.start()
        except Exception as e:
            cls._setup_error = "set-up failed: %s" % e

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.tern is not None:
                cls.tern.stop()
        finally:
            for d in cls.mounts:
                umount(d)
            cls.mounts = []
            super().tearDownClass()

    def flush(self):
        p = subprocess.run([harness.tern_bin(), "queue", "flush", "-c", self.tern.conf], env=self.tern.env(),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout)

    def submit(self, user, tok):
        """One message of about BODY_KIB KiB. Returns (final reply, its
        stage): the first reply that is not 2xx/3xx, or the end of data."""
        body = harness.simple_body(tok, extra=b"".join(b"%05d %s\r\n" % (i, b"x" * 90)
                                                        for i in range(BODY_KIB * 1024 // 98)))
        with self.tern.session() as c:
            for stage, line in (("MAIL", "MAIL FROM:<sender@client.test>"),
                                ("RCPT", "RCPT TO:<%s@%s>" % (user, DOMAIN)), ("DATA", "DATA")):
                r = c.cmd(line)
                if r.code >= 400:
                    return r, stage
            c.send(harness.dot_stuff(body) + b".\r\n")
            r = c.read_reply()
            try:
                c.cmd("QUIT")
            except (harness.ProtocolError, OSError):
                pass
            return r, "end of data"

    def test_enospc_gives_4xx_and_loses_nothing(self):
        t = self.tern
        user = t.fresh_user()
        tok0, _ = t.send([user + "@" + DOMAIN])       # the Maildir exists and works
        t.wait_for_token(tok0, user)
        mail_filler = os.path.join(t.dir, "mailfs", "filler")
        spool_filler = os.path.join(t.dir, "spoolfs", "filler")
        fill(mail_filler)
        size = fill(spool_filler)
        os.truncate(spool_filler, max(0, size - SPOOL_LEFT))     # not for another segment
        acked, refused = {}, {}
        for i in range(MAX_MESSAGES):
            tok = harness.token("full%02d" % i)
            r, stage = self.submit(user, tok)
            if r.code == 250:
                qid = harness.queue_id(r.text)
                self.assertTrue(qid, r)
                acked[tok] = qid
                continue
            # RFC 3463 4.3.1 mail system full; 4.3.0 other or undefined mail system status
            self.assertIn((r.code, r.enh), ((452, "4.3.1"), (451, "4.3.0")),
                          "message %d refused at %s with %r, not a 4xx for a full disk" % (i, stage, r))
            refused[tok] = (stage, r)
            if len(refused) >= 3:
                break
        self.assertTrue(refused, "%d messages accepted and no 4xx: the spool never filled (%d bytes free)"
                        % (len(acked), free_space(os.path.dirname(spool_filler))))
        self.assertTrue(acked, "no message accepted with a segment's room free in the spool")
        self.assertIsNone(t.health_check(), "tern stopped answering on a full disk")
        for tok, qid in acked.items():      # kept, waiting for the full Maildir
            self.assertFalse(any(tok.encode() in m for m in t.messages(user)),
                             "%s delivered into a full Maildir?" % tok)
        t.wait_log("id=%s event=deferred" % sorted(acked.values())[0])

        # Space in the Maildirs, none at all in the spool: the messages are
        # delivered, recorded in the segment's reserve (were it used up
        # they could come twice, never not at all), and tern goes on
        # answering.
        fill(spool_filler + "2")
        os.unlink(mail_filler)
        self.flush()
        for tok in acked:
            t.wait_for_token(tok, user)
        self.assertIsNone(t.health_check(), "tern stopped answering with the spool full")
        # space again everywhere: tern finishes with every message, and no
        # refused one was ever delivered
        os.unlink(spool_filler)
        os.unlink(spool_filler + "2")
        self.flush()
        t.wait_settled(list(acked.values()), removed_only=True)
        got = b"\n".join(t.messages(user))
        self.assertEqual([tok for tok in refused if tok.encode() in got], [],
                         "a message answered with 4xx was delivered (the client sends it again)")
        t.wait_incoming_empty()
        tok, _ = t.send([user + "@" + DOMAIN])
        t.wait_for_token(tok, user)
        harness.note("%d accepted while the Maildirs were full, then %s; all delivered once space was freed"
                     % (len(acked), ", ".join("%s at %s" % (r.raw[0].decode("utf-8", "replace"), stage)
                                               for stage, r in refused.values())))


# --------------------------------------------------------------------------
# strace: fsync before 250

STRACE_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
UNFINISHED = re.compile(r"^(\w+)\((.*) <unfinished \.\.\.>$")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)")


def strace_calls(text):
    """[(index, pid, name, text of the whole call, result)] from `strace -f
    -ttt -y` output, an unfinished call joined with its resumption and
    placed where it returned."""
    out = []
    pending = {}
    for raw in text.splitlines():
        m = STRACE_LINE.match(raw)
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(3)
        u = UNFINISHED.match(rest)
        if u:
            pending[pid] = (u.group(1), u.group(2))
            continue
        r = RESUMED.match(rest)
        if r and pid in pending:
            name, args = pending.pop(pid)
            rest = "%s(%s%s" % (name, args, r.group(2))
        c = CALL.match(rest)
        if c:
            out.append((len(out), pid, c.group(1), rest, c.group(3)))
    return out


class FsyncBeforeAck(TernTestCase):
    START = False
    SYSCALLS = ["fsync", "fdatasync", "pwrite64", "pwritev", "write", "writev", "sendmsg", "sendto"]
    MESSAGES = 3

    def test_fsync_before_250(self):
        t = self.tern
        trace = os.path.join(t.dir, "strace.out")
        t.start_traced(trace, self.SYSCALLS, ["-ttt", "-yy", "-s", "65536"])
        qids = []
        errors = []
        lock = threading.Lock()

        def one():
            try:
                user = "alice"
                _, qid = t.send([user + "@" + DOMAIN])
                with lock:
                    qids.append(qid)
            except Exception as e:
                with lock:
                    errors.append(repr(e))
        try:
            one()                                   # alone
            threads = [threading.Thread(target=one) for _ in range(self.MESSAGES - 1)]
            for th in threads:                      # and together: a commit batch
                th.start()
            for th in threads:
                th.join(harness.WAIT)
            self.assertEqual(errors, [])
            t.wait_settled(qids, removed_only=True)
        finally:
            t.stop()
        with open(trace, errors="replace") as f:
            calls = strace_calls(f.read())
        self.assertTrue(calls, "nothing traced")
        spool = re.escape(os.path.realpath(t.spool))
        for qid in qids:
            self.check_order(calls, spool, qid)
        harness.note("%d messages: record written, segment fdatasync'ed, seg/ fsync'ed, then the 250 "
                     "(strace -f)" % len(qids))

    def test_checker_sees_a_250_before_the_fsync(self):
        """check_order() is not vacuous: a trace in which the 250 comes
        before the segment's fdatasync fails it."""
        qid = "0123456789abcdef"
        good = [
            '100 1.000001 fsync(6</s/spool/seg>) = 0',
            '100 1.000002 pwrite64(18</s/spool/seg/0000000000000001.seg>, "TRc1\\0...'
            'version 1\\nid %s\\narrival 1\\n...", 400, 48) = 400' % qid,
            '100 1.000003 fdatasync(18</s/spool/seg/0000000000000001.seg> <unfinished ...>',
            '200 1.000004 writev(15<TCP:[127.0.0.1:25->127.0.0.1:4000]>, [{iov_base="250 2.0.0 Ok: queued as %s'
            '\\r\\n", iov_len=42}], 1) = 42' % qid,
            '100 1.000005 <... fdatasync resumed>) = 0',
        ]
        with self.assertRaises(AssertionError):
            self.check_order(strace_calls("\n".join(good)), re.escape("/s/spool"), qid)
        good[3], good[4] = good[4], good[3]
        self.check_order(strace_calls("\n".join(good)), re.escape("/s/spool"), qid)

    def check_order(self, calls, spool, qid):
        def first(pred, after=-1, what=""):
            for c in calls:
                if c[0] > after and pred(c):
                    return c
            self.fail("%s: no %s in the trace%s:\n%s" % (
                qid, what, " after line %d" % after if after >= 0 else "",
                "\n".join(c[3][:200] for c in calls if qid in c[3])[-4000:]))

        segment = re.compile(r"\(\d+<(%s/seg/[0-9a-f]{16}\.seg)>" % spool)
        write = first(lambda c: c[2] in ("pwrite64", "pwritev") and c[4] not in ("-1", "?")
                      and segment.match(c[3][len(c[2]):]) and "\\nid %s\\n" % qid in c[3],
                      what="write of the MSG record of %s to a segment" % qid)
        path = segment.match(write[3][len(write[2]):]).group(1)
        datasync = first(lambda c: c[2] in ("fdatasync", "fsync") and c[4] == "0"
                         and ("<%s>" % path) in c[3], after=write[0],
                         what="fdatasync of %s after the write" % path)
        dirsync = first(lambda c: c[2] == "fsync" and c[4] == "0" and re.match(r"fsync\(\d+<%s/seg>\)" % spool, c[3]),
                        what="fsync of spool/seg/ (the segment's name made durable)")
        reply = first(lambda c: c[2] in ("write", "writev", "sendmsg", "sendto")
                      and "250 2.0.0 Ok: queued as %s" % qid in c[3] and "TCP" in c[3],
                      what="write of the 250 to the client")
        order = [("fsync of seg/", dirsync), ("write of the record", write),
                 ("fdatasync of the segment", datasync), ("250 to the client", reply)]
        got = sorted(order, key=lambda x: x[1][0])
        self.assertEqual([n for n, _ in got], [n for n, _ in order],
                         "%s: order in the trace:\n%s" % (qid, "\n".join("%5d pid %d %s" % (c[0], c[1], c[3][:160])
                                                                        for _, c in got)))
        self.assertNotEqual(reply[1], datasync[1], "the 250 came from the queue process itself?")

if __name__ == "__main__":
    unittest.main()
