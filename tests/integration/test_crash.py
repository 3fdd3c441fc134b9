"""
test_crash.py - nothing acknowledged is ever lost, and nothing delivered
locally is delivered twice (issue 2, parts 8, 9, 11; issue 9, 3.8).

Four client threads send messages (each with a unique token) while the
whole tern process group is SIGKILLed and restarted on the same spool
KILLS times (32; TERN_CRASH_KILLS for a longer run), each kill at a random
moment after the restarted tern has acknowledged a message again, so the
kills fall on commits, deliveries and recoveries alike. The clients keep
sending until the kills are over (at least TOTAL messages in all). A
message whose session breaks is sent again (same token) until it gets
"250 ... queued as <id>": all of them must be acknowledged in the end,
except at most one per sender thread and kill (in flight when its time ran
out), and each of those must have seen a broken session. Every
message that got "250 ... queued as <id>" must then be found exactly once
in every Maildir its recipients reach: its copies are counted by the queue
id of tern's Received: field, so a client that resent a message whose 250
it never saw (a second message, with its own id) is not a duplicate, and
two recipients reaching one mailbox make one copy. spool/incoming must be
empty after recovery, no spool file may still hold a delivered message,
and no Maildir may keep a file in tmp/ (interrupted deliveries are
cleaned up at recovery).
"""

import collections
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402

TOTAL = 200
THREADS = 4
KILLS = int(os.environ.get("TERN_CRASH_KILLS", "32"))
# envelope recipient -> the mailboxes it reaches
TARGETS = [
    (["alice@" + DOMAIN], ["alice"]),
    (["bob@" + DOMAIN], ["bob"]),
    (["team@" + DOMAIN], ["alice", "bob"]),                     # alias: two deliveries
    (["carol@" + DOMAIN, "dave@" + DOMAIN], ["carol", "dave"]),  # two recipients
    (["alice@" + DOMAIN, "team@" + DOMAIN], ["alice", "bob"]),  # alice twice: one copy
]
BOXES = ("alice", "bob", "carol", "dave")
# the queue id in the Received: field tern prepends (smtp_session.c)
RECEIVED_ID = re.compile(rb"\(tern\) with [A-Z0-9]+ id ([0-9a-f]{16})")


class CrashRecovery(TernTestCase):

    def test_sigkill_during_load(self):
        t = self.tern
        acked = {}               # token -> (queue id, mailboxes)
        tried = []               # every token sent at least once
        broken = {}              # token -> sessions that broke (tern down or killed)
        lock = threading.Lock()
        progress = [0]           # messages finished (acked or given up)
        stop = threading.Event()
        failures = []

        def send_one(tok, rcpts):
            body = harness.simple_body(tok)
            try:
                c = harness.SMTPClient(t.port, timeout=20)
            except OSError:
                return None          # refused while tern is down
            try:
                g = c.greeting()
                if g.code != 220:
                    return None
                if c.ehlo().code != 250:
                    return None
                if c.cmd("MAIL FROM:<crash@client.test>").code != 250:
                    return None
                for rc in rcpts:
                    if c.cmd("RCPT TO:<%s>" % rc).code != 250:
                        return None
                if c.cmd("DATA").code != 354:
                    return None
                c.send(harness.dot_stuff(body) + b".\r\n")
                r = c.read_reply()
                if r.code == 250:
                    qid = harness.queue_id(r.text)
                    if not qid:
                        failures.append("250 without queue id: %r" % r)
                    return qid or "?"
                return None
            except (OSError, harness.ProtocolError):
                return None
            finally:
                c.close()

        def sender(idx):
            try:
                sender_loop(idx)
            except BaseException as e:     # a dead thread must not look like success
                failures.append("sender %d: %r" % (idx, e))
                raise

        def sender_loop(idx):
            rnd = random.Random(idx)
            n = -1
            while n + 1 < TOTAL // THREADS or not kills_over.is_set():
                n += 1
                rcpts, boxes = TARGETS[(idx + n) % len(TARGETS)]
                tok = "crash-%d-%03d-%08x" % (idx, n, rnd.getrandbits(32))
                with lock:
                    tried.append(tok)
                deadline = time.monotonic() + 120
                while not stop.is_set() and time.monotonic() < deadline:
                    qid = send_one(tok, rcpts)
                    if qid:
                        with lock:
                            acked[tok] = (qid, boxes)
                        break
                    with lock:
                        broken[tok] = broken.get(tok, 0) + 1
                    time.sleep(0.05)   # server down or restarting: try again
                with lock:
                    progress[0] += 1

        kills_over = threading.Event()
        threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(THREADS)]
        for th in threads:
            th.start()
        kills = 0
        seed = int(os.environ.get("TERN_CRASH_SEED", random.randrange(1 << 32)))
        rnd = random.Random(seed)
        try:
            for k in range(KILLS):
                # under load: once the restarted tern acknowledges again,
                # kill at a random moment within the next 0.4 s
                before = len(acked)
                deadline = time.monotonic() + 60
                while len(acked) == before and time.monotonic() < deadline and any(th.is_alive() for th in threads):
                    time.sleep(0.005)
                time.sleep(rnd.uniform(0, 0.4))
                t.kill_group()
                kills += 1
                time.sleep(rnd.uniform(0, 0.2))
                t.start()
            kills_over.set()
            for th in threads:
                th.join(240)
            self.assertFalse(any(th.is_alive() for th in threads), "senders did not finish")
        finally:
            kills_over.set()
            stop.set()
        self.assertFalse(failures, failures)
        self.assertEqual(kills, KILLS)
        # Every message is acknowledged in the end; at most the ones in
        # flight at a kill (one per sender) may have run out of time, and
        # only if their session did break.
        self.assertGreaterEqual(len(tried), TOTAL)
        unacked = sorted(set(tried) - set(acked))
        self.assertLessEqual(len(unacked), THREADS * KILLS,
                             "%d of %d messages never acknowledged (%d kills, %d senders): %s"
                             % (len(unacked), len(tried), KILLS, THREADS, unacked[:10]))
        self.assertEqual([tok for tok in unacked if not broken.get(tok)], [],
                         "messages never acknowledged although no session of theirs broke")

        # every acknowledged message reaches every mailbox its recipient reaches
        deadline = time.monotonic() + 180
        while True:
            contents = {}
            for box in ("alice", "bob", "carol", "dave"):
                contents[box] = b"\n".join(t.messages(box))
            missing = [(tok, box) for tok, (qid, boxes) in acked.items() for box in boxes
                       if tok.encode() not in contents[box]]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if missing:
            self.fail("%d acknowledged deliveries missing after %d SIGKILLs, e.g. %s\nstderr tail:\n%s"
                      % (len(missing), kills, ["%s (queue id %s) -> %s" % (tok, acked[tok][0], box)
                                                for tok, box in missing[:10]], t.stderr_tail(30)))
        # recovery removed partial files and finished the queue
        t.wait_incoming_empty()
        deadline = time.monotonic() + 60
        while True:
            left = [i for i, data in t.spool_messages().items() if any_token_in(data, acked)]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertFalse(left, "delivered messages still queued: %r" % left[:10])

        # exactly once: each acknowledged message has one copy (by queue
        # id) in each mailbox it reaches, and no queue id has two anywhere
        copies = {box: collections.Counter(received_id(m) for m in t.messages(box)) for box in BOXES}
        wrong = ["%s (queue id %s) -> %s: %d copies" % (tok, qid, box, copies[box][qid.encode()])
                 for tok, (qid, boxes) in sorted(acked.items()) for box in boxes
                 if copies[box][qid.encode()] != 1]
        duplicates = sum(n - 1 for box in BOXES for qid, n in copies[box].items() if qid and n > 1)
        resent = sum(1 for box in BOXES for m in t.messages(box) if b"crash-" in m) - sum(
            len(boxes) for qid, boxes in acked.values()) - duplicates
        harness.note("kills=%d sent=%d acked=%d (never: %d) duplicates=%d unacknowledged-copies=%d seed=%d"
                     % (kills, len(tried), len(acked), len(unacked), duplicates, resent, seed))
        self.assertEqual(duplicates, 0, "%d duplicate local deliveries after %d SIGKILLs (seed %d), e.g. %s"
                         % (duplicates, kills, seed, [(box, qid, n) for box in BOXES
                                                      for qid, n in copies[box].items() if qid and n > 1][:10]))
        self.assertFalse(wrong, "%d acknowledged deliveries not exactly once (seed %d), e.g. %s"
                         % (len(wrong), seed, wrong[:10]))
        # interrupted deliveries left nothing in tmp/ (cleaned at recovery)
        deadline = time.monotonic() + 30
        while True:
            tmp = [os.path.join(box, n) for box in BOXES
                   for n in listdir(os.path.join(t.maildir_path(box), "tmp"))]
            if not tmp or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertFalse(tmp, "files left in Maildir tmp/ after %d SIGKILLs: %r" % (kills, tmp[:10]))


def received_id(msg):
    m = RECEIVED_ID.search(msg)
    return m.group(1) if m else b""


def listdir(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def any_token_in(data, acked):
    return b"crash-" in data and any(tok.encode() in data for tok in acked)
