"""
test_maildir_reader.py - one copy per mailbox and message, while a mail
reader takes each new copy away at once.

Two recipients of one message reach the same mailbox (an alias of bob, and
bob). A reader watching bob's new/ (inotify) moves each arriving file to
cur/ the moment it appears: as IMAP servers do, appending ":2,S", or under
a name of its own. Between the two recipients tern delivers a large copy to
three other mailboxes, so the reader has long done its move before the
second recipient's turn. The second recipient must be delivered by the
first one's copy (one file in bob's Maildir), and both recipients must be
journaled delivered (the queue file goes, no report, no retry).
"""

import ctypes
import os
import select
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402

IN_CREATE = 0x100
IN_MOVED_TO = 0x80
IN_NONBLOCK = 0o4000
_EVENT_HEAD = 16   # struct inotify_event: wd, mask, cookie, len


class Reader:
    """Moves every file that appears in maildir/new to maildir/cur, named by
    rename(name) (None: leave it). Only this test's directories are touched."""

    def __init__(self, maildir, rename):
        self.maildir = maildir
        self.rename = rename
        self.moved = []
        self.errors = []
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(IN_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        wd = self._libc.inotify_add_watch(self._fd, os.path.join(maildir, "new").encode(),
                                          IN_CREATE | IN_MOVED_TO)
        if wd < 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            off = 0
            while off + _EVENT_HEAD <= len(buf):
                nlen = int.from_bytes(buf[off + 12:off + 16], "little")
                name = buf[off + _EVENT_HEAD:off + _EVENT_HEAD + nlen].rstrip(b"\0").decode()
                off += _EVENT_HEAD + nlen
                self._move(name)

    def _move(self, name):
        to = self.rename(name)
        if to is None:
            return
        src = os.path.join(self.maildir, "new", name)
        dst = os.path.join(self.maildir, "cur", to)
        try:
            # never over a file already in cur/ (a second copy under the
            # same name would hide the first): link, then unlink
            os.link(src, dst)
            os.unlink(src)
            self.moved.append((name, to))
        except FileNotFoundError:
            pass
        except FileExistsError:
            self.moved.append((name, None))   # left in new/: counted there
        except OSError as e:
            self.errors.append("%s: %s" % (name, e))

    def stop(self):
        os.write(self._stop_w, b"x")
        self._thread.join(10)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)


def big_message(tok, size):
    line = ("%s filler line to give the copies some weight ...\r\n" % tok)
    body = line * (size // len(line) + 1)
    return ("From: sender@client.test\r\nTo: team@%s\r\nSubject: %s\r\n"
            "Message-ID: <%s@client.test>\r\n\r\n%s" % (DOMAIN, tok, tok, body))


class OneCopyWhileReaderMoves(TernTestCase):
    TERN_OPTIONS = {
        "options": {"max_message_size": "32M"},
        "domains": {
            DOMAIN: {
                "mailboxes": ["postmaster", "bob", "carol", "dave", "erin"],
                "aliases": {"team": ["bob"], "crowd": ["carol", "dave", "erin"]},
            },
        },
    }

    def _scenario(self, rename):
        t = self.tern
        # bob's Maildir exists (tern makes it) before the reader watches it
        warm = harness.token("warm")
        with t.smtp() as s:
            self.assertEqual(s.sendmail("sender@client.test", ["bob@" + DOMAIN],
                                        big_message(warm, 100)), {})
        t.wait_for_token(warm, "bob")
        t.wait_settled(s.queue_ids)
        before = len(t.messages("bob"))

        reader = Reader(t.maildir_path("bob"), rename)
        try:
            tok = harness.token("reader")
            with t.smtp() as s:
                # team -> bob first; crowd's three large copies give the
                # reader its time; then bob himself
                self.assertEqual(s.sendmail("sender@client.test",
                                            ["team@" + DOMAIN, "crowd@" + DOMAIN, "bob@" + DOMAIN],
                                            big_message(tok, 4 * 1024 * 1024)), {})
            qid = s.queue_ids[-1]
            t.wait_log("queue id=%s event=removed" % qid)
        finally:
            reader.stop()
        self.assertEqual(reader.errors, [])
        self.assertTrue(reader.moved, "the reader never saw bob's copy arrive")
        self.assertEqual(len(reader.moved), 1, "copies arrived in bob's new/: %r" % reader.moved)
        copies = [m for m in t.messages("bob") if tok.encode() in m]
        self.assertEqual(len(copies), 1, "bob got %d copies of one message (the reader moved %r)"
                         % (len(copies), reader.moved))
        self.assertEqual(len(t.messages("bob")), before + 1)
        for box in ("carol", "dave", "erin"):
            n = sum(1 for m in t.messages(box) if tok.encode() in m)
            self.assertEqual(n, 1, "%s got %d copies" % (box, n))
        # every recipient journaled delivered: none deferred, failed or
        # reported, and the queue file went
        for rcpt in ("team", "crowd", "bob"):
            self.assertEqual(len(t.log_lines("queue id=%s event=delivered rcpt=<%s@%s>"
                                             % (qid, rcpt, DOMAIN))), 3 if rcpt == "crowd" else 1,
                             "delivery lines of %s" % rcpt)
        for ev in ("event=deferred", "event=failed", "event=mailbox-unavailable"):
            self.assertEqual(t.log_lines("queue id=%s " % qid, ev), [], ev)

    def test_reader_appends_flags(self):
        # IMAP servers: new/<name> -> cur/<name>:2,S
        self._scenario(lambda name: name + ":2,S")

    def test_reader_renames_altogether(self):
        # readers that name files their own way: nothing of tern's name stays
        counter = iter(range(1, 1000))
        self._scenario(lambda name: "reader-%d-%d.host:2,S" % (os.getpid(), next(counter)))
