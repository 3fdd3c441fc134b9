"""
test_outbound.py - outbound delivery (issue 3): tern relays mail from
relay_networks to the recipients' MX hosts, found in DNS.

The far side is real: dnsmasq serves the test zones (MX, A, null MX,
NXDOMAIN for anything else under .test) on 127.0.0.1:<free port>, named by
`resolver`; each MX host is a receiving SMTP server (receivers.py,
python3-aiosmtpd in a process of its own) on 127.0.N.H:25, N being a /24
block this file holds a lock on so that the two builds, run side by side,
never share an address (`allow_loopback_mx yes` lets tern use loopback
MX hosts; `relay_port 25`). Every receiver records each transaction it
accepts (envelope with parameters, content exactly as on the wire) and
every command and connection, so the tests check what tern actually sent,
not what it says it did.

Covered (RFC 5321 unless noted):
  routing     MX preference order, next MX when the first is down or
              greets with 421 (5.1); MX hosts of equal preference share
              the load while connections are reused, and an idle
              connection is closed after relay_connection_reuse_time
              (5.1); HELO when EHLO is refused (4.1.4);
              implicit MX (A record only); null MX refused at RCPT (556
              5.1.10) or failed without delivery (RFC 7505); NXDOMAIN is a
              permanent failure (5.1.2)
  replies     4xx to RCPT, then accepted: retried and delivered once; 4xx
              to the end of data, then accepted: same; 5xx to RCPT: failed
              once, never retried; one 250, one 450 and one 550 in one
              transaction: each recipient handled on its own, nothing sent
              twice; connection closed in the middle of DATA, or silence
              and close at the greeting or after the final dot: deferred
              and delivered once by a retry, never lost
  batching    all recipients for one MX in one transaction; an idle
              connection carries the next message to the same MX
  extensions  SIZE too small: 5.3.4 before MAIL (RFC 1870); 8-bit body
              to a peer without 8BITMIME: 5.6.3, as src/smtp_client.h
              documents (RFC 6152); a 7-bit body marked 8BITMIME goes
              without BODY=; SMTPUTF8 sender to a peer without it: 5.6.7
              (RFC 6531 3.4); DSN parameters (RET, ENVID, NOTIFY, ORCPT)
              reach a peer that offers DSN and not one that does not (RFC
              3461 5.2); no pipelining towards a peer without PIPELINING
              (RFC 2920)
  content     dot-stuffing and CRLF byte for byte (4.5.2); bare LF "."
              bare LF and CRLF "." CRLF stored through BDAT never end the
              message early: the receiver sees one transaction, content
              intact (no SMTP smuggling)
  queue       a recipient that only ever gets 4xx fails after
              max_queue_lifetime; a deferred message survives a restart
              and is delivered afterwards; 1,000 messages to 20
              destinations all arrive exactly once while the receivers
              never see more than max_relay_connections_per_domain
              connections each, nor more than max_relay_connections in all
  interop     delivery to a real Postfix (private instance on
              127.0.N.30:25, virtual Maildir), checked byte for byte
  logging     each attempt is logged with queue id, recipient, MX host and
              IP, the remote reply, the resulting state and the delay

Never skips for tern's sake: if check-config refuses the test
configuration, or the relay does not log `relay event=ready` (waited for
with a generous bound), every test of the class fails with the reason.
Needs root (port 25), dnsmasq and python3-aiosmtpd; the Postfix test
also needs postfix (all from `make deps`). Every process started here is
stopped by PID, also on failure.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import netfixtures  # noqa: E402
import receivers  # noqa: E402
from harness import TernTestCase  # noqa: E402
from receivers import Receiver  # noqa: E402

READY_LINE = "relay event=ready"
SENDER = "sender@client.test"
LIFETIME = 60          # max_queue_lifetime: its lower bound is 1m (docs/configuration.md)
WAIT = 60.0            # upper bound for a delivery (retries included); the ASan build is slow

FAIL_RE = re.compile(r"event=(failed|bounced?|expired|permfail)|\b(failed|bounced|permfail|undeliverable|expired|permanent)\b", re.I)
DEFER_RE = re.compile(r"\b(deferred|defer|tempfail|temporary)\b|retry", re.I)
DELIVERED_RE = re.compile(r"\b(delivered|sent|relayed)\b", re.I)

# Host numbers in the class's 127.0.N.0/24 block.
HOSTS = {
    "pref1": 2, "pref2": 3, "implicit": 4, "tmprcpt": 5, "tmpdata": 6, "reject": 7,
    "dropdata": 8, "mixed": 9, "batch": 10, "small": 11, "no8bit": 12, "dsn": 13,
    "plain": 14, "stallgreet": 15, "life": 16, "restart": 17, "stalldot": 18, "exact": 19,
    "postfix": 30, "greet1": 20, "greet2": 21, "helo": 22, "equal1": 23, "equal2": 24,
}
for _i in range(1, 21):
    HOSTS["d%d" % _i] = 100 + _i

# Domains with one MX "mx.<name>.test" -> host <name>.
SIMPLE_DOMAINS = ["tmprcpt", "tmpdata", "reject", "dropdata", "mixed", "batch", "small", "no8bit",
                  "dsn", "plain", "stallgreet", "life", "restart", "stalldot", "exact", "helo"] + \
                 ["d%d" % i for i in range(1, 21)]


def zone_args(block):
    z = [
        "--mx-host=pref.test,mx1.pref.test,10",
        "--mx-host=pref.test,mx2.pref.test,20",
        "--host-record=mx1.pref.test,%s" % block.ip(HOSTS["pref1"]),
        "--host-record=mx2.pref.test,%s" % block.ip(HOSTS["pref2"]),
        "--host-record=implicit.test,%s" % block.ip(HOSTS["implicit"]),
        "--mx-host=greet.test,mx1.greet.test,10",
        "--mx-host=greet.test,mx2.greet.test,20",
        "--host-record=mx1.greet.test,%s" % block.ip(HOSTS["greet1"]),
        "--host-record=mx2.greet.test,%s" % block.ip(HOSTS["greet2"]),
        "--mx-host=equal.test,mx1.equal.test,10",
        "--mx-host=equal.test,mx2.equal.test,10",
        "--host-record=mx1.equal.test,%s" % block.ip(HOSTS["equal1"]),
        "--host-record=mx2.equal.test,%s" % block.ip(HOSTS["equal2"]),
        "--mx-host=nullmx.test,.,0",
        "--mx-host=pf.test,mx.pf.test,10",
        # bücher.test, as DNS knows it (RFC 5891: A-labels)
        "--mx-host=xn--bcher-kva.test,mx.plain.test,10",
        "--host-record=mx.pf.test,%s" % block.ip(HOSTS["postfix"]),
    ]
    for d in SIMPLE_DOMAINS:
        z.append("--mx-host=%s.test,mx.%s.test,10" % (d, d))
        z.append("--host-record=mx.%s.test,%s" % (d, block.ip(HOSTS[d])))
    return z


def normalize_eol(b):
    """What bare_newline normalize stores: every bare CR or LF becomes CRLF."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", b)


def header_names(block):
    """Field names of a header block (bytes, CRLF or LF lines, no body)."""
    names = []
    for line in re.split(rb"\r?\n", block):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if not names:
                raise AssertionError("continuation line first: %r" % line)
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not re.fullmatch(rb"[!-9;-~]+", name):
            raise AssertionError("not a header field: %r" % line)
        names.append(name.decode())
    return names


def header_fields(block):
    """[(name, whole field bytes)] of a header block."""
    out = []
    for line in re.split(rb"(?<=\n)", block):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + line)
        else:
            out.append((line.partition(b":")[0].decode("latin-1"), line))
    return out


def received_queue_id(data):
    """The queue id in the first Received: field tern wrote (bytes)."""
    m = re.search(rb"\(tern\) with \S+ id ([0-9a-f]{16})\b", data)
    return m.group(1).decode() if m else None


def log_time(line):
    """The time stamp that starts a log line (seconds since the epoch), or None."""
    import datetime
    try:
        return datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
    except (ValueError, IndexError):
        return None


def unescape_log(line):
    """Undo log_quote()'s \\xNN escapes (a space in a quoted value is \\x20)."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), line)


class Submission:
    def __init__(self, tok, qid, body, replies, t0):
        self.tok = tok
        self.qid = qid
        self.body = body
        self.replies = replies
        self.t0 = t0


class OutboundCase(TernTestCase):
    """One tern, one dnsmasq and one loopback block per class."""

    RELAY_OPTIONS = {
        "allow_loopback_mx": "yes",
        "retry_min": "1s",
        "retry_max": "4s",
        "max_queue_lifetime": "%ds" % LIFETIME,
        "relay_port": "25",
        "max_relay_connections": "100",
        "max_relay_connections_per_domain": "10",
    }
    PROBE = "batch.test"   # a name of zone() whose MX answers once dnsmasq is up
    block = None
    dns = None
    workdir = None
    class_receivers = []

    # ------------------------------------------------------------ fixtures
    @classmethod
    def setUpClass(cls):
        cls.tern = None
        cls._setup_error = None
        cls.block = cls.dns = cls.workdir = None
        cls.class_receivers = []
        cls._skip_reason = harness.binary_missing_reason() or harness.root_users_missing_reason()
        if cls._skip_reason:
            return
        if not harness.IS_ROOT:
            cls._skip_reason = "needs root: the receiving MX hosts listen on port 25"
            return
        if not os.access(netfixtures.DNSMASQ, os.X_OK):
            cls._skip_reason = "dnsmasq not installed (Debian package dnsmasq-base)"
            return
        cls._skip_reason = receivers.aiosmtpd_missing_reason()
        if cls._skip_reason:
            return
        try:
            cls.workdir = tempfile.mkdtemp(prefix="tern-outbound-", dir="/tmp")
            os.chmod(cls.workdir, 0o755)
            cls.block = netfixtures.LoopbackBlock()
            cls.dns = netfixtures.Dnsmasq(cls.zone(cls.block), cls.workdir, cls.PROBE).start()
            opts = {"resolver": "127.0.0.1:%d" % cls.dns.port}
            opts.update(cls.RELAY_OPTIONS)
            opts.update(cls.prepare())
            cls.tern = harness.Tern(options=opts, extra_config=cls.extra_config())
            cls.check_config()
            cls.tern.start()
            if not cls.wait_relay_ready(harness.WAIT):
                raise AssertionError("no '%s' in the log within %.0fs; log tail:\n%s" % (
                    READY_LINE, harness.WAIT, "\n".join(cls.tern.log_text().splitlines()[-20:])))
            cls.class_setup()
        except Exception as e:   # reported on every test of the class
            cls._setup_error = "set-up failed: %s" % e

    @classmethod
    def class_setup(cls):
        pass

    @classmethod
    def zone(cls, block):
        """dnsmasq arguments of the class's test zones."""
        return zone_args(block)

    @classmethod
    def prepare(cls):
        """Before tern's configuration is written (workdir exists): more
        options for it."""
        return {}

    @classmethod
    def extra_config(cls):
        """Configuration text appended (route blocks)."""
        return ""

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            for r in cls.class_receivers:
                r.stop()
            cls.class_receivers = []
            if cls.dns is not None:
                cls.dns.stop()
                cls.dns = None
            if cls.block is not None:
                cls.block.release()
                cls.block = None
            if cls.workdir and not os.environ.get("TERN_TEST_KEEP"):
                shutil.rmtree(cls.workdir, ignore_errors=True)

    @classmethod
    def check_config(cls):
        """tern check-config accepts the test configuration, or the set-up
        fails with what it said."""
        p = subprocess.run([harness.tern_bin(), "check-config", "-c", cls.tern.conf],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=cls.tern.env(), timeout=60)
        if p.returncode != 0:
            raise AssertionError("check-config rejects the test configuration:\n%s"
                                 % p.stdout.decode("utf-8", "replace"))

    @classmethod
    def ready_count(cls):
        return cls.tern.log_text().count(READY_LINE)

    @classmethod
    def wait_relay_ready(cls, timeout, before=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cls.ready_count() > before:
                return True
            if not cls.tern.running():
                return False
            time.sleep(0.1)
        return False

    def setUp(self):
        super().setUp()
        self._receivers = []
        self.addCleanup(self._stop_receivers)

    def _stop_receivers(self):
        for r in self._receivers:
            r.stop()

    # ------------------------------------------------------------ helpers
    @classmethod
    def make_receiver(cls, host, **behaviour):
        return Receiver(cls.block.ip(HOSTS[host]), cls.workdir, name=host,
                        hostname="mx.%s.test" % host, **behaviour)

    def receiver(self, host, **behaviour):
        """A receiver for this test (stopped after it)."""
        r = self.make_receiver(host, **behaviour)
        self._receivers.append(r)
        return r.start()

    @classmethod
    def submit_to(cls, rcpts, body=None, mail_params="", rcpt_params=None, tok=None, bdat=None):
        """One message into tern from 127.0.0.1 (a relay client). Returns a
        Submission; qid is None when no recipient was accepted."""
        tok = tok or harness.token("ob")
        body = body if body is not None else harness.simple_body(tok)
        t0 = time.monotonic()
        replies = {}
        qid = None
        with cls.tern.session() as c:
            r = c.cmd("MAIL FROM:<%s>%s" % (SENDER, (" " + mail_params) if mail_params else ""))
            if r.code != 250:
                raise AssertionError("MAIL refused: %r" % r)
            for rc in rcpts:
                p = (rcpt_params or {}).get(rc, "")
                replies[rc] = c.cmd("RCPT TO:<%s>%s" % (rc, (" " + p) if p else ""))
            if any(x.code == 250 for x in replies.values()):
                if bdat is not None:
                    c.send(b"BDAT %d LAST\r\n" % len(bdat) + bdat)
                    r = c.read_reply()
                else:
                    r = c.cmd("DATA")
                    if r.code != 354:
                        raise AssertionError("DATA refused: %r" % r)
                    c.send(harness.dot_stuff(body) + b".\r\n")
                    r = c.read_reply()
                if r.code != 250:
                    raise AssertionError("message refused: %r" % r)
                qid = harness.queue_id(r.text)
                if not qid:
                    raise AssertionError("no queue id in %r" % r)
            try:
                c.cmd("QUIT")
            except (harness.ProtocolError, OSError):
                pass
        return Submission(tok, qid, bdat if bdat is not None else body, replies, t0)

    def submit(self, rcpts, expect_all=True, **kw):
        s = self.submit_to(rcpts, **kw)
        if expect_all:
            for rc in rcpts:
                self.assertReply(s.replies[rc], 250, msg="RCPT %s" % rc)
        return s

    def log_lines(self, *needles, pattern=None):
        out = []
        for line in self.tern.log_text().splitlines():
            line = unescape_log(line)
            if all(n in line for n in needles) and (pattern is None or pattern.search(line)):
                out.append(line)
        return out

    def deferral_lines(self, *needles):
        """Lines that say temporary and not failed (for negative checks)."""
        return [l for l in self.log_lines(*needles, pattern=DEFER_RE) if not FAIL_RE.search(l)]

    def wait_log(self, needles, pattern=None, timeout=WAIT, what=""):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_lines(*needles, pattern=pattern)
            if lines:
                return lines
            if time.monotonic() > deadline:
                self.fail("%s: no log line with %s%s within %.0fs; lines with %s:\n%s" % (
                    what or "log", needles, " matching /%s/" % pattern.pattern if pattern else "",
                    timeout, needles[0], "\n".join(self.log_lines(needles[0])[-15:])))
            time.sleep(0.1)

    def assert_content(self, data, body, what="content"):
        """data is what tern relayed: trace fields it added (Received only)
        followed by exactly the stored content."""
        if not data.endswith(body):
            self.fail("%s: the relayed content does not end with the submitted message byte for byte\n"
                      "sent:     %r\nreceived: %r" % (what, body[:1500], data[:1500]))
        prefix = data[:len(data) - len(body)]
        self.assertTrue(prefix.endswith(b"\r\n") or not prefix, "%s: prefix %r" % (what, prefix))
        names = header_names(prefix)
        self.assertIn("Received", names, "%s: tern added no Received field (RFC 5321 4.4): %r" % (what, prefix))
        self.assertEqual(set(n.lower() for n in names), {"received"},
                         "%s: tern added fields other than Received: %s" % (what, names))

    def assert_relayed(self, tx, sub, rcpts, what=""):
        self.assertEqual(tx.mail_from, SENDER, what)
        self.assertEqual(sorted(a.lower() for a in tx.rcpts), sorted(a.lower() for a in rcpts), what)
        self.assertEqual((tx.bare_lf, tx.bare_cr), (0, 0), "%s: bare LF/CR on the wire" % what)
        self.assertEqual(tx.raw, receivers.dot_stuff(tx.data), "%s: dot-stuffing" % what)
        self.assert_content(tx.data, sub.body, what)

    def wait_removed(self, qids, what="", timeout=WAIT):
        """Wait until tern has removed each of qids from its queue: every
        recipient delivered or failed (and any report queued), so no attempt
        is left to come. A receiver records each transaction before its
        reply, so what it has then is all it will ever get."""
        try:
            self.tern.wait_settled(qids, timeout=timeout, removed_only=True)
        except AssertionError as e:
            self.fail("%s: %s" % (what or "queue", e))

    def only_one(self, rcv, tok, what=""):
        """Exactly one transaction with tok: waits for it, then until tern
        has removed the message it came from (named by the queue id in
        tern's Received: field), and checks nothing more came."""
        tx = rcv.wait_transactions(1, tok, timeout=WAIT, what=what)
        qid = received_queue_id(tx[0].data)
        self.assertTrue(qid, "%s: no queue id in tern's Received: field: %r" % (what, tx[0].data[:500]))
        self.wait_removed([qid], what)
        tx = rcv.transactions(tok)
        self.assertEqual(len(tx), 1, "%s: delivered %d times: %r" % (what, len(tx), tx))
        return tx[0]

    def assert_attempt_logged(self, qid, rcpt, rcv, reply_snippet, state_re, what=""):
        """Issue 3 part 6: queue id, recipient, MX host and IP, the remote
        reply, the resulting state and the delay, on one line."""
        lines = self.wait_log([qid, rcv.ip],
                              what="%s: an attempt line with the queue id and the MX IP" % what)
        lines = [l for l in lines if rcpt.lower() in l.lower()]
        self.assertTrue(lines, "%s: no attempt line names the recipient %s:\n%s"
                        % (what, rcpt, "\n".join(self.log_lines(qid))))
        good = [l for l in lines if state_re.search(l)]
        self.assertTrue(good, "%s: no attempt line with state /%s/:\n%s" % (what, state_re.pattern, "\n".join(lines)))
        self.assertTrue([l for l in good if reply_snippet in l],
                        "%s: the remote reply (%r) is not on the attempt line:\n%s"
                        % (what, reply_snippet, "\n".join(good)))
        self.assertTrue([l for l in good if rcv.hostname in l],
                        "%s: the MX host name %s is not on the attempt line:\n%s"
                        % (what, rcv.hostname, "\n".join(good)))
        self.assertTrue([l for l in good if re.search(r"delay", l, re.I)],
                        "%s: no delay on the attempt line:\n%s" % (what, "\n".join(good)))

    def assert_no_pipelining(self, rcv, what=""):
        bad = [c for c in rcv.commands() if c["pipelined"]]
        self.assertEqual(bad, [], "%s: commands sent before the reply to the previous one "
                                  "to a peer without PIPELINING (RFC 2920): %r" % (what, bad))


class OutboundDelivery(OutboundCase):
    life = None
    life_error = None

    @classmethod
    def class_setup(cls):
        # The queue-lifetime test needs LIFETIME seconds: its message goes
        # in now and is checked by the last test, while the others run.
        cls.life = None
        cls.life_error = None
        try:
            r = cls.make_receiver("life", rcpt_tempfail=10 ** 6)
            cls.class_receivers.append(r)
            r.start()
            cls.life = cls.submit_to(["expire@life.test"])
        except Exception as e:
            cls.life_error = str(e)

    # ------------------------------------------------------------ routing
    def test_mx_preference_order(self):
        r1 = self.receiver("pref1")
        r2 = self.receiver("pref2")
        s = self.submit(["alice@pref.test"])
        tx = self.only_one(r1, s.tok, what="MX 10")
        self.assert_relayed(tx, s, ["alice@pref.test"], "MX 10")
        self.assertEqual(r2.transactions(s.tok), [], "the MX of preference 20 got it too")
        r1.stop()     # the best MX is down now: connection refused
        s2 = self.submit(["bob@pref.test"])
        tx2 = self.only_one(r2, s2.tok, what="MX 20 when MX 10 refuses connections")
        self.assert_relayed(tx2, s2, ["bob@pref.test"], "MX 20")

    def test_equal_mx_share_load(self):
        # issue 9 part 3 item 6: RFC 5321 5.1, MX hosts of equal preference
        # are tried in random order, also while idle connections are
        # reused. Each message is sent when the one before has arrived, so
        # the connection that carried it is idle and cached (default
        # relay_connection_reuse_time): before the fix all of them went
        # to the host connected first. All on one host: 1 run in 2^19.
        rcvs = [self.make_receiver("equal1"), self.make_receiver("equal2")]
        self._receivers.extend(rcvs)
        receivers.start_all(rcvs)
        n = 20
        subs = []
        for i in range(n):
            s = self.submit(["share%d@equal.test" % i])
            subs.append(s)
            netfixtures.wait_for(lambda: any(r.transactions(s.tok) for r in rcvs), WAIT)
        def where():
            return dict((s.tok, [r.name for r in rcvs for _ in r.transactions(s.tok)]) for s in subs)

        got = where()
        lost = [t for t, where in got.items() if not where]
        self.assertEqual(lost, [], "messages never delivered")
        per = dict((r.name, len(r.transactions())) for r in rcvs)
        self.assertEqual(sum(per.values()), n, "transactions per host: %s" % per)
        self.assertTrue(all(per.values()), "all %d messages went to one of two MX hosts of equal "
                                           "preference: %s" % (n, per))
        for s in subs:
            self.assertEqual(self.deferral_lines(s.qid), [], "message %s deferred" % s.qid)
        # The cache closes each connection once no job wanted it for
        # relay_connection_reuse_time, and says so.
        for r in rcvs:
            self.wait_log(["relay event=conn-close reason=idle", "ip=%s " % r.ip],
                          what="idle connection to %s closed" % r.name)
            self.assertTrue(netfixtures.wait_for(lambda: all(e is not None for _, e in r.intervals()), WAIT),
                            "%s: a connection is still open: %s" % (r.name, r.intervals()))
        # Nothing came twice, also after the connections closed and tern
        # removed every message (no attempt can come after that).
        self.wait_removed([s.qid for s in subs], "equal-preference MX messages")
        twice = dict((t, w) for t, w in where().items() if len(w) > 1)
        self.assertEqual(twice, {}, "delivered more than once")
        self.assertEqual(sum(len(r.transactions()) for r in rcvs), n)

    def test_4xx_greeting_moves_to_next_mx(self):
        # issue 3: "A connection failure or a 4xx greeting moves on to the next MX"
        r1 = self.receiver("greet1", greeting="421 4.3.2 receiver: too busy, try another MX")
        r2 = self.receiver("greet2")
        s = self.submit(["nora@greet.test"])
        tx = self.only_one(r2, s.tok, what="MX 20 after a 421 greeting at MX 10")
        self.assert_relayed(tx, s, ["nora@greet.test"], "next MX")
        self.assertGreaterEqual(len(r1.events("greeting")), 1, "MX 10 was not tried first")
        self.assertEqual(r1.commands(), [], "commands sent after a 421 greeting")

    def test_helo_when_ehlo_refused(self):
        # RFC 5321 4.1.4 / 3.2: EHLO refused with 5xx -> HELO; no extensions then
        rcv = self.receiver("helo", ehlo_reject=True)
        s = self.submit(["omar@helo.test"])
        tx = self.only_one(rcv, s.tok, what="server without EHLO")
        self.assert_relayed(tx, s, ["omar@helo.test"], "HELO")
        self.assertTrue(rcv.commands("HELO"), "no HELO after EHLO got 502")
        self.assertEqual(tx.mail_params, [], "MAIL parameters sent after HELO")
        self.assert_no_pipelining(rcv, "HELO peer")

    def test_implicit_mx(self):
        r = self.receiver("implicit")
        s = self.submit(["carol@implicit.test"])
        tx = self.only_one(r, s.tok, what="implicit MX (A record only)")
        self.assert_relayed(tx, s, ["carol@implicit.test"], "implicit MX")

    def test_null_mx(self):
        rcpt = "dave@nullmx.test"
        s = self.submit([rcpt], expect_all=False)
        r = s.replies[rcpt]
        if r.code != 250:
            # RFC 7505 3: refused at RCPT, 556 5.1.10 (550 tolerated)
            self.assertReplyIn(r, [(556, "5.1.10"), (550, "5.1.10")], "RCPT to a null-MX domain")
            return
        lines = self.wait_log([s.qid, rcpt], FAIL_RE, what="null MX")
        self.assertTrue([l for l in lines if "5.1.10" in l], "null MX failure without 5.1.10:\n%s"
                        % "\n".join(lines))

    def test_nxdomain(self):
        rcpt = "frank@no-such-domain.test"
        s = self.submit([rcpt], expect_all=False)
        r = s.replies[rcpt]
        if r.code != 250:
            self.assertEqual(r.code // 100, 5, "RCPT to an NXDOMAIN domain: %r" % r)
            self.assertEqual(r.enh, "5.1.2", "RCPT to an NXDOMAIN domain: %r" % r)
            return
        lines = self.wait_log([s.qid, rcpt], FAIL_RE, what="NXDOMAIN")
        self.assertTrue([l for l in lines if "5.1.2" in l], "NXDOMAIN failure without 5.1.2:\n%s"
                        % "\n".join(lines))
        self.assertFalse(self.deferral_lines(s.qid, rcpt), "NXDOMAIN treated as temporary")

    # ------------------------------------------------------------ replies
    def test_rcpt_4xx_then_accept(self):
        rcv = self.receiver("tmprcpt", rcpt_tempfail=2)
        rcpt = "erin@tmprcpt.test"
        s = self.submit([rcpt])
        tx = self.only_one(rcv, s.tok, what="4xx twice, then accepted")
        self.assert_relayed(tx, s, [rcpt], "after retries")
        self.assertGreaterEqual(len(rcv.rcpt_replies(rcpt)), 3, "RCPT attempts")
        self.assert_attempt_logged(s.qid, rcpt, rcv, "try again later", DEFER_RE, "4xx attempt")
        self.assert_attempt_logged(s.qid, rcpt, rcv, "received as", DELIVERED_RE, "final attempt")

    def test_data_4xx_then_accept(self):
        rcv = self.receiver("tmpdata", data_tempfail=1)
        rcpt = "gina@tmpdata.test"
        s = self.submit([rcpt])
        tx = self.only_one(rcv, s.tok, what="451 to the end of data once, then accepted")
        self.assert_relayed(tx, s, [rcpt], "after a 451 at end of data")
        self.assertEqual(len(rcv.events("data-tempfail")), 1)
        self.assert_attempt_logged(s.qid, rcpt, rcv, "data not taken", DEFER_RE, "4xx at end of data")

    def test_rcpt_5xx_is_final(self):
        rcv = self.receiver("reject", rcpt_reject=True)
        rcpt = "hank@reject.test"
        s = self.submit([rcpt])
        self.wait_log([s.qid, rcpt], FAIL_RE, what="550 to RCPT")
        self.assert_attempt_logged(s.qid, rcpt, rcv, "no such user here", FAIL_RE, "550 to RCPT")
        # once removed from the queue it cannot be tried again
        self.wait_removed([s.qid], "550 to RCPT")
        self.assertEqual(len(rcv.rcpt_replies(rcpt)), 1, "a recipient refused with 5xx was tried again")
        self.assertEqual(rcv.transactions(), [])
        self.assertFalse(self.deferral_lines(s.qid, rcpt), "5xx treated as temporary")

    def test_mixed_recipient_results(self):
        rcv = self.receiver("mixed", rcpt_rules={
            "temp": [450, "4.2.1", "receiver: mailbox busy", 1],
            "bad": [550, "5.1.1", "receiver: no such mailbox"],
        })
        ok, temp, bad = "ok1@mixed.test", "temp1@mixed.test", "bad1@mixed.test"
        s = self.submit([ok, temp, bad])
        first = rcv.wait_transactions(1, s.tok, what="first transaction")[0]
        self.assertEqual([a.lower() for a in first.rcpts], [ok], "first transaction: only the 250 recipient")
        self.assert_content(first.data, s.body)
        # the 450 recipient is retried alone; the 550 and 250 ones never again
        rcv.wait_transactions(2, s.tok, what="retry of the 450 recipient")
        self.wait_removed([s.qid], "mixed results")
        tx = rcv.transactions(s.tok)
        self.assertEqual([sorted(a.lower() for a in t.rcpts) for t in tx], [[ok], [temp]],
                         "each recipient delivered exactly once")
        self.assertEqual(len(rcv.rcpt_replies(bad)), 1, "a 550 recipient was tried again")
        self.assertEqual(len(rcv.rcpt_replies(ok)), 1, "a delivered recipient was tried again")
        self.assert_attempt_logged(s.qid, bad, rcv, "no such mailbox", FAIL_RE, "550 recipient")
        self.assert_attempt_logged(s.qid, temp, rcv, "mailbox busy", DEFER_RE, "450 recipient")
        self.assert_attempt_logged(s.qid, ok, rcv, "received as", DELIVERED_RE, "250 recipient")
        self.assertFalse(self.log_lines(s.qid, ok, pattern=FAIL_RE), "the 250 recipient logged as failed")

    def test_close_in_middle_of_data(self):
        rcv = self.receiver("dropdata", close_in_data=1)
        rcpt = "ivan@dropdata.test"
        s = self.submit([rcpt])
        tx = self.only_one(rcv, s.tok, what="retry after the connection broke in DATA")
        self.assert_relayed(tx, s, [rcpt], "after a broken DATA")
        self.assertEqual(len(rcv.events("dropped")), 1)
        self.wait_log([s.qid], DEFER_RE, what="broken DATA: deferred")

    def test_stall_at_greeting(self):
        # Silence then close, shorter than any real timeout: the attempt
        # must count as temporary and be retried.
        rcv = self.receiver("stallgreet", stall_greeting=[3, 1])
        rcpt = "judy@stallgreet.test"
        s = self.submit([rcpt])
        tx = self.only_one(rcv, s.tok, what="retry after a silent server closed at the greeting")
        self.assert_relayed(tx, s, [rcpt], "after a stalled greeting")
        self.assertEqual(len(rcv.events("stall")), 1)
        self.wait_log([s.qid], DEFER_RE, what="stalled greeting: deferred")

    def test_stall_after_final_dot(self):
        # No reply to the final dot, then close: RFC 5321 6.1 says the
        # message may not be lost; it is retried (a duplicate is allowed by
        # the RFC, but this server never took it).
        rcv = self.receiver("stalldot", stall_dot=[3, 1])
        rcpt = "kate@stalldot.test"
        s = self.submit([rcpt])
        tx = self.only_one(rcv, s.tok, what="retry after no reply to the final dot")
        self.assert_relayed(tx, s, [rcpt], "after a stalled end of data")
        self.assertEqual(len(rcv.events("stall")), 1)
        self.wait_log([s.qid], DEFER_RE, what="stalled end of data: deferred")

    # ------------------------------------------------------------ batching and logging
    def test_one_transaction_for_one_mx(self):
        rcv = self.receiver("batch")
        rcpts = ["a@batch.test", "b@batch.test", "c@batch.test"]
        s = self.submit(rcpts)
        tx = self.only_one(rcv, s.tok, what="three recipients, one MX")
        self.assert_relayed(tx, s, rcpts, "batched")
        self.assertEqual(len(rcv.rcpt_replies()), 3, "RCPT commands")
        for rc in rcpts:
            self.assert_attempt_logged(s.qid, rc, rcv, "received as", DELIVERED_RE, "delivery of %s" % rc)

    def test_connection_reuse(self):
        # issue 3: "Connections are reused for several messages to the same
        # destination". Five messages one after the other, each sent once
        # the one before is delivered, so its connection is idle (cached
        # for relay_connection_reuse_time) and carries the next. (Sent all
        # at once, each could find the others' connections busy and open
        # its own: that made this test fail under load.)
        rcv = self.receiver("plain")
        subs = []
        for i in range(5):
            subs.append(self.submit(["reuse%d@plain.test" % i]))
            self.only_one(rcv, subs[-1].tok, what="message %s" % subs[-1].tok)
        self.assertLess(rcv.connection_count(), len(subs), "one connection per message, none reused")
        self.assertEqual(len(rcv.commands("EHLO")) + len(rcv.commands("HELO")), rcv.connection_count())

    # ------------------------------------------------------------ extensions
    def test_size_limit(self):
        rcv = self.receiver("small", size=2000)
        tok = harness.token("big")
        big = harness.simple_body(tok, extra=b"".join(b"%04d %s\r\n" % (i, b"x" * 70) for i in range(80)))
        s = self.submit(["big@small.test"], body=big, tok=tok)
        lines = self.wait_log([s.qid, "big@small.test"], FAIL_RE, what="message over the peer's SIZE")
        self.assertTrue([l for l in lines if "5.3.4" in l], "SIZE failure without 5.3.4:\n%s" % "\n".join(lines))
        self.assertEqual(rcv.commands("MAIL"), [], "MAIL sent for a message over the peer's SIZE (RFC 1870)")
        s2 = self.submit(["ok@small.test"])
        tx = self.only_one(rcv, s2.tok, what="a message under the peer's SIZE")
        self.assert_relayed(tx, s2, ["ok@small.test"], "small message")
        size = tx.param("SIZE")
        if size is not None:
            self.assertTrue(str(size).isdigit() and int(size) <= 2000, "SIZE=%r" % size)

    def test_8bit_to_peer_without_8bitmime(self):
        no8 = self.receiver("no8bit", pipelining=False, eightbitmime=False, smtputf8=False, dsn=False)
        plain = self.receiver("plain")
        tok = harness.token("8bit")
        body = harness.simple_body(tok, extra="Grüße, çà et là\r\n".encode("utf-8"))
        s = self.submit(["x@no8bit.test", "y@plain.test"], body=body, tok=tok, mail_params="BODY=8BITMIME")
        tx = self.only_one(plain, s.tok, what="8-bit message to a peer with 8BITMIME")
        self.assert_relayed(tx, s, ["y@plain.test"], "8-bit")
        self.assertEqual(str(tx.param("BODY")).upper(), "8BITMIME", "BODY=8BITMIME not passed on (RFC 6152)")
        lines = self.wait_log([s.qid, "x@no8bit.test"], FAIL_RE, what="8-bit message to a peer without 8BITMIME")
        self.assertTrue([l for l in lines if "5.6.3" in l], "8-bit failure without 5.6.3:\n%s" % "\n".join(lines))
        self.assertEqual(no8.commands("MAIL"), [], "an 8-bit message was started to a peer without 8BITMIME")
        # 7-bit content marked 8BITMIME: sent, without BODY=
        s2 = self.submit(["z@no8bit.test"], mail_params="BODY=8BITMIME")
        tx2 = self.only_one(no8, s2.tok, what="7-bit message marked 8BITMIME to a peer without 8BITMIME")
        self.assert_relayed(tx2, s2, ["z@no8bit.test"], "7-bit")
        self.assertIsNone(tx2.param("BODY"))
        self.assert_no_pipelining(no8, "peer without PIPELINING")

    def test_smtputf8_to_peer_without_smtputf8(self):
        no8 = self.receiver("no8bit", pipelining=False, eightbitmime=False, smtputf8=False)
        plain = self.receiver("plain")
        sender_params = "SMTPUTF8"
        rcpts = ["u@no8bit.test", "v@plain.test", "zoë@plain.test"]
        tok = harness.token("utf8")
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<jörg@client.test> %s" % sender_params), 250)
            for rc in rcpts:
                self.assertReply(c.cmd("RCPT TO:<%s>" % rc), 250, msg=rc)
            self.assertReply(c.cmd("DATA"), 354)
            body = harness.simple_body(tok)
            c.send(harness.dot_stuff(body) + b".\r\n")
            r = c.read_reply()
            self.assertReply(r, 250)
            qid = harness.queue_id(r.text)
        tx = self.only_one(plain, tok, what="SMTPUTF8 message to a peer with SMTPUTF8")
        self.assertEqual(tx.mail_from, "jörg@client.test")
        self.assertIsNotNone(tx.param("SMTPUTF8"), "SMTPUTF8 not sent (RFC 6531 3.4)")
        self.assertEqual(sorted(tx.rcpts), sorted(["v@plain.test", "zoë@plain.test"]))
        self.assert_content(tx.data, body)
        lines = self.wait_log([qid, "u@no8bit.test"], FAIL_RE, what="SMTPUTF8 message to a peer without it")
        self.assertTrue([l for l in lines if "5.6.7" in l], "SMTPUTF8 failure without 5.6.7:\n%s" % "\n".join(lines))
        self.assertEqual(no8.commands("MAIL"), [], "an SMTPUTF8 message was started to a peer without SMTPUTF8")

    def test_idn_domain_looked_up_by_a_label(self):
        """RFC 5891 5 / RFC 6531: a recipient at bücher.test is delivered
        through the MX of xn--bcher-kva.test; the envelope keeps the
        U-label the client sent."""
        plain = self.receiver("plain")
        tok = harness.token("idn")
        rcpt = "anna@b\u00fccher.test"
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<%s> SMTPUTF8" % SENDER), 250)
            self.assertReply(c.cmd("RCPT TO:<%s>" % rcpt), 250)
            self.assertReply(c.cmd("DATA"), 354)
            c.send(harness.dot_stuff(harness.simple_body(tok)) + b".\r\n")
            self.assertReply(c.read_reply(), 250)
        tx = self.only_one(plain, tok, what="IDN recipient")
        self.assertEqual(tx.rcpts, [rcpt])
        self.assertIsNotNone(tx.param("SMTPUTF8"))

    def test_dsn_parameters(self):
        dsn = self.receiver("dsn", dsn=True)
        plain = self.receiver("plain", dsn=False)
        tok = harness.token("dsn")
        envid = "QQ314159." + tok
        a, b = "a@dsn.test", "b@plain.test"
        s = self.submit([a, b], tok=tok, mail_params="RET=HDRS ENVID=%s" % envid,
                        rcpt_params={a: "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;%s" % a,
                                     b: "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;%s" % b})
        tx = self.only_one(dsn, tok, what="peer with DSN")
        self.assert_relayed(tx, s, [a], "DSN peer")
        self.assertEqual(str(tx.param("RET")).upper(), "HDRS", "RET not relayed (RFC 3461 5.2.1)")
        self.assertEqual(tx.param("ENVID"), envid, "ENVID not relayed verbatim")
        self.assertEqual(str(tx.param("NOTIFY", a)).upper(), "SUCCESS,FAILURE", "NOTIFY not relayed")
        orcpt = str(tx.param("ORCPT", a))
        self.assertEqual(orcpt.partition(";")[0].lower(), "rfc822", "ORCPT type: %r" % orcpt)
        self.assertEqual(orcpt.partition(";")[2], a, "ORCPT address: %r" % orcpt)
        tx2 = self.only_one(plain, tok, what="peer without DSN")
        self.assert_relayed(tx2, s, [b], "non-DSN peer")
        for name in ("RET", "ENVID"):
            self.assertIsNone(tx2.param(name), "%s sent to a peer without DSN" % name)
        for name in ("NOTIFY", "ORCPT"):
            self.assertIsNone(tx2.param(name, b), "%s sent to a peer without DSN" % name)

    # ------------------------------------------------------------ content
    def test_dot_stuffing_byte_exact(self):
        rcv = self.receiver("exact")
        tok = harness.token("dots")
        lines = [b"Subject: dots " + tok.encode(), b"X-Tern-Test: " + tok.encode(), b"",
                 b".", b"..", b"...three", b".leading", b" .space first", b"trailing.", b"",
                 b"." + b"d" * 997, b"a\tb", b"", b".", b". ", b"end", b"."]
        body = b"\r\n".join(lines) + b"\r\n"
        s = self.submit(["dots@exact.test"], body=body, tok=tok)
        tx = self.only_one(rcv, tok, what="dot lines")
        self.assert_relayed(tx, s, ["dots@exact.test"], "dot-stuffing")
        # on the wire every line that starts with a dot got one more
        for line in tx.raw.split(b"\r\n"):
            if line.startswith(b"."):
                self.assertTrue(line.startswith(b".."), "unstuffed dot line on the wire: %r" % line[:60])

    def test_no_smuggling_from_bdat(self):
        rcv = self.receiver("exact")
        tok = harness.token("smuggle")
        payload = (b"Subject: smuggling " + tok.encode() + b"\r\nX-Tern-Test: " + tok.encode() + b"\r\n\r\n"
                   b"first part\n.\nMAIL FROM:<evil@client.test>\nRCPT TO:<victim@exact.test>\nDATA\n"
                   b"smuggled one\n.\r\n"
                   b"second part\r\n.\rthird part\r\n"
                   b"\r\n.\r\nMAIL FROM:<evil2@client.test>\r\nRCPT TO:<victim2@exact.test>\r\nDATA\r\n"
                   b"smuggled two\r\n.\r\n"
                   b"last line\r\n")
        s = self.submit(["x@exact.test"], bdat=payload, tok=tok)
        self.assertIsNotNone(s.qid)
        s.body = normalize_eol(payload)      # what bare_newline normalize stores
        tx = self.only_one(rcv, tok, what="content with dot lines from bare LF/CR")
        self.assert_relayed(tx, s, ["x@exact.test"], "smuggling content")
        self.assertEqual(len(rcv.transactions()), 1, "more than one transaction: %r" % rcv.transactions())
        self.assertEqual([e["addr"] for e in rcv.rcpt_replies()], ["x@exact.test"],
                         "a smuggled RCPT reached the receiver")
        self.assertEqual(len(rcv.commands("MAIL")), 1, "a smuggled MAIL reached the receiver")

    # ------------------------------------------------------------ queue
    def test_restart_survival(self):
        rcpt = "lena@restart.test"
        s = self.submit([rcpt])                     # nothing listens there yet
        self.wait_log([s.qid], DEFER_RE, what="unreachable MX: deferred")
        before = self.ready_count()
        self.tern.restart()
        self.assertTrue(self.wait_relay_ready(15, before), "no '%s' after the restart" % READY_LINE)
        rcv = self.receiver("restart")
        tx = self.only_one(rcv, s.tok, what="deferred message after a restart")
        self.assert_relayed(tx, s, [rcpt], "after restart")
        self.assert_attempt_logged(s.qid, rcpt, rcv, "received as", DELIVERED_RE, "after restart")

    def test_zz_queue_lifetime(self):
        # named to run last: its message went in at class set-up, while the
        # other tests ran
        if self.life_error:
            self.fail("queue-lifetime set-up failed: %s" % self.life_error)
        s = self.life
        rcpt = "expire@life.test"
        rcv = self.class_receivers[0]
        lines = self.wait_log([s.qid, rcpt], FAIL_RE, timeout=max(5.0, s.t0 + LIFETIME + WAIT - time.monotonic()),
                              what="always 4xx until max_queue_lifetime %ds" % LIFETIME)
        # by tern's own clock: from the commit to the failure
        committed = [log_time(l) for l in self.log_lines(s.qid, "committed")]
        failed = [log_time(l) for l in lines]
        if committed and committed[0] is not None and failed[0] is not None:
            age = failed[0] - committed[0]
        else:
            age = time.monotonic() - s.t0
        self.assertGreaterEqual(age, LIFETIME - 1, "failed %.1fs after arrival, before max_queue_lifetime "
                                "(%ds):\n%s" % (age, LIFETIME, "\n".join(lines)))
        attempts = len(rcv.rcpt_replies(rcpt))
        self.assertGreaterEqual(attempts, 5, "too few attempts in %ds with retry_max 4s" % LIFETIME)
        self.assertEqual(rcv.transactions(), [])
        self.wait_removed([s.qid], "expired message")    # no attempt can come after this
        self.assertEqual(len(rcv.rcpt_replies(rcpt)), attempts, "tried again after it expired")

    # ------------------------------------------------------------ interop
    def test_postfix_byte_for_byte(self):
        why = receivers.PrivatePostfix.missing_reason()
        if why:
            self.skipTest(why)
        ip = self.block.ip(HOSTS["postfix"])
        pf = receivers.PrivatePostfix(ip, "pf.test", ["user"], self.workdir)
        self.addCleanup(pf.stop)
        pf.start()
        tok = harness.token("pf")
        lines = [b"Message-ID: <%s@client.test>" % tok.encode(), b"Subject: to Postfix " + tok.encode(),
                 b"From: <sender@client.test>", b"To: <user@pf.test>", b"Date: Sun, 29 Nov 2026 12:00:00 +0000",
                 b"X-Tern-Test: " + tok.encode(),
                 b"", b"Hello Postfix.", b".", b"..two dots", b".one dot", b"", b"x" * 900, b"last line"]
        body = b"\r\n".join(lines) + b"\r\n"
        s = self.submit(["user@pf.test"], body=body, tok=tok)
        deadline = time.monotonic() + WAIT
        msgs = []
        while time.monotonic() < deadline:
            msgs = [m for m in pf.messages("user") if tok.encode() in m]
            if msgs:
                break
            time.sleep(0.1)
        self.assertEqual(len(msgs), 1, "Postfix Maildir: %d messages; tern log:\n%s\nPostfix log:\n%s"
                         % (len(msgs), "\n".join(self.log_lines(s.qid)), pf.log_tail()))
        m = msgs[0]
        want = harness.crlf_to_lf(body)                 # virtual(8) writes LF lines
        self.assertTrue(m.endswith(want), "Postfix got a different message:\nsent: %r\ngot:  %r"
                        % (want[:1000], m[:1500]))
        fields = header_fields(m[:len(m) - len(want)])
        names = [n.lower() for n, _ in fields]
        self.assertTrue(set(names) <= {"return-path", "delivered-to", "x-original-to", "received"},
                        "fields added other than Return-Path, Delivered-To, X-Original-To, Received: %s" % names)
        self.assertEqual(names.count("received"), 2, "Received fields: Postfix's and tern's: %s" % names)
        rp = [f for n, f in fields if n.lower() == "return-path"]
        if rp:
            self.assertIn(b"<" + SENDER.encode() + b">", rp[0])
        received = [f for n, f in fields if n.lower() == "received"]
        self.assertIn(b"postfix.pf.test", received[0], "Postfix's Received first")
        self.assertIn(harness.HOSTNAME.encode(), received[1], "tern's Received second")


class OutboundLoad(OutboundCase):
    """1,000 messages to 20 destinations under both concurrency limits
    (20 x 2 per destination > 8 in all, so each limit can bind)."""

    PER_DOMAIN = 2
    GLOBAL = 8
    RELAY_OPTIONS = dict(OutboundCase.RELAY_OPTIONS, max_relay_connections=str(GLOBAL),
                         max_relay_connections_per_domain=str(PER_DOMAIN))
    MESSAGES = 1000
    DESTS = 20

    def test_1000_messages_20_destinations(self):
        rcvs = [self.make_receiver("d%d" % i, reply_delay=0.02) for i in range(1, self.DESTS + 1)]
        self._receivers.extend(rcvs)
        receivers.start_all(rcvs)
        sampler = receivers.SocketSampler(self.block.n).start()
        self.addCleanup(sampler.stop)
        toks = {}
        qids = []
        errors = []
        lock = threading.Lock()
        tag = harness.token("load")

        def sender(k, nthreads):
            try:
                with self.tern.session() as c:
                    for i in range(k, self.MESSAGES, nthreads):
                        # in destination order (50 for d1, then d2, ...): the
                        # senders work on the same few destinations at a time,
                        # so each builds up a backlog and the per-destination
                        # limit, the global one and connection reuse all come
                        # into play (round robin over 20 would only ever hit
                        # the global limit, one connection per destination)
                        d = i * self.DESTS // self.MESSAGES + 1
                        tok = "%s-%04d" % (tag, i)
                        rcpt = "u%d@d%d.test" % (i, d)
                        r = c.send_message(SENDER, [rcpt], harness.simple_body(tok))
                        if r.code != 250:
                            raise AssertionError("message %d: %r" % (i, r))
                        with lock:
                            toks[tok] = d
                            qids.append(harness.queue_id(r.text))
            except Exception as e:
                with lock:
                    errors.append("%s: %s" % (type(e).__name__, e))

        threads = [threading.Thread(target=sender, args=(k, 4)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertEqual(errors, [], "submission failed")
        self.assertEqual(len(toks), self.MESSAGES)

        tok_re = re.compile(rb"X-Tern-Test: (" + re.escape(tag.encode()) + rb"-\d{4})")

        def seen():
            counts = {}
            for n, r in enumerate(rcvs, 1):
                for tx in r.transactions():
                    m = tok_re.search(tx.data)
                    if m:
                        counts.setdefault(m.group(1).decode(), []).append((n, tx.rcpts))
            return counts

        # every message removed from tern's queue: nothing more can arrive
        self.wait_removed(qids, "1,000 messages", timeout=300)
        got = seen()
        missing = sorted(set(toks) - set(got))
        self.assertEqual(missing, [], "%d of %d messages never arrived (first: %s)"
                         % (len(missing), self.MESSAGES, missing[:5]))
        dups = dict((t, v) for t, v in got.items() if len(v) > 1)
        self.assertEqual(dups, {}, "delivered more than once")
        wrong = dict((t, v) for t, v in got.items() if v[0][0] != toks[t])
        self.assertEqual(wrong, {}, "delivered to the wrong destination")

        sampler.stop()
        # Per destination: what each receiver saw (one process, so its
        # accept and close times are in order, up to `slack`), and tern's
        # sockets as the kernel lists them. In all: the kernel's count only,
        # since 20 receiver processes each note a close when they get to run.
        slack = 0.02
        per = dict((r.name, receivers.max_overlap(r.intervals(), slack)) for r in rcvs)
        over = dict((k, v) for k, v in per.items() if v > self.PER_DOMAIN)
        self.assertEqual(over, {}, "more than max_relay_connections_per_domain=%d connections at once "
                                   "(per destination, as the receivers saw them: %s)" % (self.PER_DOMAIN, per))
        kper = dict((r.name, sampler.max_per.get(r.ip, 0)) for r in rcvs)
        over = dict((k, v) for k, v in kper.items() if v > self.PER_DOMAIN)
        self.assertEqual(over, {}, "more than max_relay_connections_per_domain=%d sockets at once "
                                   "(per destination, from /proc/net/tcp: %s)" % (self.PER_DOMAIN, kper))
        seen_total = receivers.max_overlap([iv for r in rcvs for iv in r.intervals()], slack)
        self.assertGreater(sampler.samples, 10, "socket sampler did not run")
        self.assertLessEqual(sampler.max_total, self.GLOBAL,
                             "more than max_relay_connections=%d sockets at once (/proc/net/tcp; the "
                             "receivers saw at most %d)" % (self.GLOBAL, seen_total))
        # issue 3: connections are reused for several messages to one destination
        nconn = sum(r.connection_count() for r in rcvs)
        self.assertLess(nconn, self.MESSAGES, "%d connections for %d messages: none carried a second message"
                        % (nconn, self.MESSAGES))


if __name__ == "__main__":
    unittest.main()
