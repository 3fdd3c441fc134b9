"""
test_crash.py - nothing acknowledged is ever lost (issue 2, parts 8, 9, 11).

Four client threads send 200 messages (each with a unique token) while the
whole tern process group is SIGKILLed and restarted on the same spool four
times, spread over the run. Every message that got "250 ... queued as" must
then be found in every Maildir its recipient reaches (duplicates are
allowed, losses are not); spool/incoming must be empty after recovery, and
no spool file may still hold a delivered message.
"""

import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402

TOTAL = 200
THREADS = 4
KILLS = 4
# envelope recipient -> the mailboxes it reaches
TARGETS = [
    (["alice@" + DOMAIN], ["alice"]),
    (["bob@" + DOMAIN], ["bob"]),
    (["team@" + DOMAIN], ["alice", "bob"]),                     # alias: two deliveries
    (["carol@" + DOMAIN, "dave@" + DOMAIN], ["carol", "dave"]),  # two recipients
]


class CrashRecovery(TernTestCase):

    def test_sigkill_during_load(self):
        t = self.tern
        acked = {}               # token -> (queue id, mailboxes)
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
            for n in range(TOTAL // THREADS):
                rcpts, boxes = TARGETS[(idx + n) % len(TARGETS)]
                tok = "crash-%d-%03d-%08x" % (idx, n, rnd.getrandbits(32))
                deadline = time.monotonic() + 90
                while not stop.is_set() and time.monotonic() < deadline:
                    qid = send_one(tok, rcpts)
                    if qid:
                        with lock:
                            acked[tok] = (qid, boxes)
                        break
                    time.sleep(0.05)   # server down or restarting: try again
                with lock:
                    progress[0] += 1

        threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(THREADS)]
        for th in threads:
            th.start()
        kills = 0
        rnd = random.Random(51764)
        try:
            for k in range(KILLS):
                # spread the kills over the run: after about 15%, 35%, 55%, 75%
                target = int(TOTAL * (0.15 + 0.2 * k))
                deadline = time.monotonic() + 120
                while progress[0] < target and time.monotonic() < deadline and any(th.is_alive() for th in threads):
                    time.sleep(0.01)
                time.sleep(rnd.uniform(0, 0.05))
                t.kill_group()
                kills += 1
                time.sleep(rnd.uniform(0.05, 0.3))
                t.start(timeout=30)
            for th in threads:
                th.join(240)
            self.assertFalse(any(th.is_alive() for th in threads), "senders did not finish")
        finally:
            stop.set()
        self.assertFalse(failures, failures)
        self.assertEqual(kills, KILLS)
        self.assertGreater(len(acked), TOTAL // 2, "too few messages acknowledged (%d): is tern restarting?"
                           % len(acked))

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
        t.wait_incoming_empty(timeout=30)
        deadline = time.monotonic() + 60
        while True:
            left = [p for p in t.spool_files() if any_token_in(p, acked)]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertFalse(left, "queue files of delivered messages not removed: %r" % left[:10])


def any_token_in(path, acked):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"crash-" in data and any(tok.encode() in data for tok in acked)
