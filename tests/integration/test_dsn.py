"""
test_dsn.py - delivery status notifications (issue 4, RFC 3461/3464,
docs/dsn.md), end to end: tern relays to receiving servers that answer as
scripted, and the reports it sends back are caught where a sender would
get them: a local sender's Maildir, or the receiving server of a remote
sender's domain (back.test), which records the envelope (MAIL FROM:<>).

Every report is parsed with Python's email package and checked field by
field against the RFC 3464 grammar (check_report): multipart/report with
report-type=delivery-status (RFC 6522), a text/plain first part, a
message/delivery-status part whose per-message and per-recipient fields
are in the grammar's order with valid values, the returned content as
RET asks, Auto-Submitted: auto-replied (RFC 3834), CRLF lines of at most
998 octets on the wire.

Covered:
  failure    5xx from the next hop (local sender: read from the Maildir
             as a person would; remote sender: MAIL FROM:<> on the wire),
             NXDOMAIN (5.1.2, decided by tern: no Remote-MTA), too big
             for the next hop (5.3.4) with the returned message cut at
             dsn_max_return_size, RET=HDRS (text/rfc822-headers), ENVID
             and ORCPT (xtext decoded), max_queue_lifetime (4.4.7)
  delay      one delay report (Action: delayed, Will-Retry-Until) after
             delay_warning_time however often the recipient is retried;
             none with NOTIFY=FAILURE
  success    NOTIFY=SUCCESS: local delivery -> delivered; a next hop
             without DSN -> relayed; a next hop with DSN gets NOTIFY,
             ORCPT, RET, ENVID and tern sends no report
  none       NOTIFY=NEVER; no NOTIFY and success; null sender; a report
             that fails itself is logged and dropped (never reported
             on); a null-MX recipient refused at RCPT gets no report

Needs root (receivers on port 25), dnsmasq and python3-aiosmtpd, like
test_outbound.py. Every process started here is stopped by PID.
"""

import email
import email.policy
import email.utils
import os
import re
import shutil
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import netfixtures  # noqa: E402
import receivers  # noqa: E402
from harness import TernTestCase  # noqa: E402
from receivers import Receiver  # noqa: E402

LIFETIME = 60          # max_queue_lifetime's lower bound
DELAY_WARN = 3         # delay_warning_time in seconds
MAX_RETURN = 4096      # dsn_max_return_size
WAIT = 60.0
MTA = harness.HOSTNAME
LOCAL_SENDER = "alice@" + harness.DOMAIN

HOSTS = {"fail": 2, "ok": 3, "dsnok": 4, "slow": 5, "small": 6, "back": 7}

# RFC 3464 2.1 / 2.2 / 2.3 and RFC 5322 pieces
ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
ADDR_FIELD = re.compile(r"^(%s)\s*;\s*(\S(?:.*\S)?)$" % ATOM)
MTA_FIELD = re.compile(r"^dns\s*;\s*([A-Za-z0-9.-]+)$")
STATUS = re.compile(r"^([245])\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$")
DIAG = re.compile(r"^smtp\s*;\s*([245][0-9][0-9])[ -](.*)$", re.S)
PER_MESSAGE = ["original-envelope-id", "reporting-mta", "dsn-gateway", "received-from-mta",
               "arrival-date"]
PER_RECIPIENT = ["original-recipient", "final-recipient", "action", "status", "remote-mta",
                 "diagnostic-code", "last-attempt-date", "final-log-id", "will-retry-until"]
ACTION_CLASS = {"failed": "45", "delayed": "4", "delivered": "2", "relayed": "2", "expanded": "2"}


def zone_args(block):
    z = ["--mx-host=nullmx.test,.,0"]
    for d, h in HOSTS.items():
        z.append("--mx-host=%s.test,mx.%s.test,10" % (d, d))
        z.append("--host-record=mx.%s.test,%s" % (d, block.ip(h)))
    return z


def is_date(s):
    try:
        return email.utils.parsedate_to_datetime(s) is not None
    except (TypeError, ValueError):
        return False


class Report:
    """A parsed report: msg (email.message.Message), text (the plain-text
    part), per_message (dict), rcpts ([dict] in order), returned (the
    third part), raw (bytes as received)."""

    def __init__(self, raw):
        self.raw = raw
        self.msg = email.message_from_bytes(raw, policy=email.policy.compat32)

    def rcpt(self, addr):
        for r in self.rcpts:
            if r["final-recipient"].lower().endswith(";" + addr.lower()):
                return r
        raise AssertionError("no group for %s in %r" % (addr, self.rcpts))


class DSNCase(TernTestCase):
    """One tern, one dnsmasq, one loopback block and its receivers per class."""

    OPTIONS = {
        "allow_loopback_mx": "yes",
        "relay_port": "25",
        "retry_min": "1s",
        "retry_max": "2s",
        "max_queue_lifetime": "%ds" % LIFETIME,
        "delay_warning_time": "%ds" % DELAY_WARN,
        "dsn_max_return_size": str(MAX_RETURN),
    }

    @classmethod
    def setUpClass(cls):
        cls.tern = None
        cls._setup_error = None
        cls.block = cls.dns = cls.workdir = None
        cls.rcv = {}
        cls.slow_sub = {}
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
            cls.workdir = tempfile.mkdtemp(prefix="tern-dsn-", dir="/tmp")
            os.chmod(cls.workdir, 0o755)
            cls.block = netfixtures.LoopbackBlock()
            cls.dns = netfixtures.Dnsmasq(zone_args(cls.block), cls.workdir, "ok.test").start()
            opts = {"resolver": "127.0.0.1:%d" % cls.dns.port}
            opts.update(cls.OPTIONS)
            behaviours = {
                "fail": {"rcpt_rules": {"nouser": (550, "5.1.1", "receiver: no such user here")}},
                "ok": {"dsn": False},
                "dsnok": {"dsn": True},
                "slow": {"rcpt_tempfail": 10 ** 6},
                "small": {"size": 2000},
                "back": {"rcpt_rules": {"bounce": (550, "5.1.1", "receiver: sender unknown")}},
            }
            rs = [Receiver(cls.block.ip(HOSTS[h]), cls.workdir, name=h, hostname="mx.%s.test" % h, **b)
                  for h, b in behaviours.items()]
            receivers.start_all(rs)
            cls.rcv = dict((r.name, r) for r in rs)
            cls.tern = harness.Tern(options=opts)
            cls.tern.start()
            deadline = time.monotonic() + harness.WAIT
            while "relay event=ready" not in cls.tern.log_text():
                if time.monotonic() > deadline:
                    raise AssertionError("the relay never said it was ready")
                time.sleep(0.1)
            # The lifetime test needs LIFETIME seconds: its messages go in
            # now and are checked by the last test.
            cls.slow_sub["warned"] = cls.submit_to("s@back.test", ["wait@slow.test"])
            cls.slow_sub["nodelay"] = cls.submit_to("s@back.test", ["nodelay@slow.test"],
                                                    rcpt_params={"nodelay@slow.test": "NOTIFY=FAILURE"})
        except Exception as e:   # reported on every test of the class
            cls._setup_error = "set-up failed: %s" % e

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            for r in cls.rcv.values():
                r.stop()
            cls.rcv = {}
            if cls.dns is not None:
                cls.dns.stop()
                cls.dns = None
            if cls.block is not None:
                cls.block.release()
                cls.block = None
            if cls.workdir and not os.environ.get("TERN_TEST_KEEP"):
                shutil.rmtree(cls.workdir, ignore_errors=True)

    # ------------------------------------------------------------ helpers
    @classmethod
    def submit_to(cls, sender, rcpts, body=None, mail_params="", rcpt_params=None, tok=None,
                  expect=250):
        """One message from 127.0.0.1 (a relay client); returns (tok, qid)."""
        tok = tok or harness.token("dsn")
        body = body if body is not None else harness.simple_body(tok)
        with cls.tern.session() as c:
            r = c.cmd("MAIL FROM:<%s>%s" % (sender, (" " + mail_params) if mail_params else ""))
            if r.code != 250:
                raise AssertionError("MAIL refused: %r" % r)
            codes = []
            for rc in rcpts:
                p = (rcpt_params or {}).get(rc, "")
                codes.append(c.cmd("RCPT TO:<%s>%s" % (rc, (" " + p) if p else "")))
            if not any(x.code == 250 for x in codes):
                c.cmd("QUIT")
                return tok, None, codes
            r = c.cmd("DATA")
            if r.code != 354:
                raise AssertionError("DATA refused: %r" % r)
            c.send(harness.dot_stuff(body) + b".\r\n")
            r = c.read_reply()
            if r.code != expect:
                raise AssertionError("message refused: %r" % r)
            qid = harness.queue_id(r.text)
            c.cmd("QUIT")
        return tok, qid

    def wait_reports_done(self, qid):
        """Wait until tern has removed qid and every report it queued for
        it from its queue: no report about qid can come after that (a
        message owing a report is removed only once the report is queued)."""
        self.tern.wait_settled([qid], timeout=WAIT, removed_only=True)
        rids = re.findall(r"dsn_id=([0-9a-f]{16})", "\n".join(self.log_lines(qid, "event=dsn")))
        self.tern.wait_settled(rids, timeout=WAIT, removed_only=True)

    def reports_at_back(self, tok, n=1, timeout=WAIT, qid=None, what="report"):
        """Reports (Report objects) that reached back.test and mention tok;
        with qid, all there will ever be (wait_reports_done)."""
        rcv = self.rcv["back"]
        tx = rcv.wait_transactions(n, tok, timeout=timeout, what=what)
        if qid:
            self.wait_reports_done(qid)
            tx = rcv.transactions(tok)
        out = []
        for t in tx:
            self.assertEqual(t.mail_from, "", "%s: a report must be sent from <> (RFC 3461 6.2)" % what)
            self.assertEqual(len(t.rcpts), 1, what)
            self.assertEqual(t.bare_lf + t.bare_cr, 0, "%s: bare line ends" % what)
            out.append(self.check_report(t.data, wire=True))
        return out

    def assertNoReport(self, tok, qid, what=""):
        """No report about tok reached back.test, once tern is done with
        qid (None: nothing was queued)."""
        if qid:
            self.wait_reports_done(qid)
        got = self.rcv["back"].transactions(tok)
        self.assertEqual(got, [], "%s: unexpected report(s): %r" % (what, [t.data[:800] for t in got]))

    def check_report(self, raw, wire=True, sender=None):
        """Parse raw (bytes) and check it against RFC 3464/6522/3834; returns
        a Report."""
        if wire:
            for line in raw.split(b"\r\n"):
                self.assertLessEqual(len(line), 998, "line over 998 octets (RFC 5322 2.1.1)")
            self.assertNotIn(b"\n", raw.replace(b"\r\n", b""), "bare LF in the report")
        rep = Report(raw)
        m = rep.msg
        self.assertEqual(m.get_content_type(), "multipart/report")
        # RFC 6522 3: report-type names the second part's type
        self.assertEqual(m.get_param("report-type"), "delivery-status")
        self.assertEqual(m["MIME-Version"], "1.0")
        self.assertEqual(m["Auto-Submitted"], "auto-replied", "RFC 3834 5")
        self.assertRegex(m["From"], r"MAILER-DAEMON@%s" % re.escape(MTA))
        self.assertTrue(is_date(m["Date"]), m["Date"])
        self.assertRegex(m["Message-ID"], r"^<[^<>@\s]+@[^<>@\s]+>$")
        self.assertTrue(m["Subject"])
        if sender:
            self.assertEqual(m["To"], "<%s>" % sender)
        self.assertEqual(m.defects, [], "MIME defects: %r" % m.defects)
        parts = m.get_payload()
        self.assertEqual(len(parts), 3, [p.get_content_type() for p in parts])
        self.assertEqual(parts[0].get_content_type(), "text/plain", "RFC 6522 3: human-readable first")
        self.assertEqual(parts[1].get_content_type(), "message/delivery-status")
        self.assertIn(parts[2].get_content_type(), ("message/rfc822", "text/rfc822-headers"))
        rep.text = parts[0].get_payload(decode=True).decode("us-ascii")
        rep.returned = parts[2]
        blocks = parts[1].get_payload()
        self.assertGreaterEqual(len(blocks), 2, "per-message fields and at least one recipient")
        rep.per_message = self.check_fields(blocks[0], PER_MESSAGE, "per-message")
        self.assertIn("reporting-mta", rep.per_message, "RFC 3461 6.3(b)")
        self.assertEqual(MTA_FIELD.match(rep.per_message["reporting-mta"]).group(1), MTA)
        if "arrival-date" in rep.per_message:
            self.assertTrue(is_date(rep.per_message["arrival-date"]))
        rep.rcpts = []
        for b in blocks[1:]:
            f = self.check_fields(b, PER_RECIPIENT, "per-recipient")
            for req in ("final-recipient", "action", "status"):
                self.assertIn(req, f, "RFC 3464 2.3: %s is required" % req)
            self.assertRegex(f["final-recipient"], ADDR_FIELD)
            if "original-recipient" in f:
                self.assertRegex(f["original-recipient"], ADDR_FIELD)
            self.assertIn(f["action"], ACTION_CLASS)
            st = STATUS.match(f["status"])
            self.assertTrue(st, "Status %r (RFC 3464 2.3.4)" % f["status"])
            self.assertIn(st.group(1), ACTION_CLASS[f["action"]],
                          "Status %s with Action %s" % (f["status"], f["action"]))
            if "remote-mta" in f:
                self.assertRegex(f["remote-mta"], MTA_FIELD)
            if "diagnostic-code" in f:
                self.assertRegex(f["diagnostic-code"], DIAG)
            for d in ("last-attempt-date", "will-retry-until"):
                if d in f:
                    self.assertTrue(is_date(f[d]), "%s %r" % (d, f[d]))
            if "will-retry-until" in f:
                self.assertEqual(f["action"], "delayed", "RFC 3464 2.3.9")
            rep.rcpts.append(f)
        return rep

    def check_fields(self, block, order, what):
        """{lower-case name: unfolded value}; names in the grammar's order,
        each at most once, extension fields only with X- (RFC 3464 2.1)."""
        seen = []
        out = {}
        for name, value in block.items():
            n = name.lower()
            if n not in order:
                self.assertTrue(n.startswith("x-"), "%s: unknown field %s" % (what, name))
                continue
            self.assertNotIn(n, out, "%s: %s twice" % (what, name))
            if seen:
                self.assertGreater(order.index(n), order.index(seen[-1]),
                                   "%s: %s after %s (RFC 3464 grammar order)" % (what, name, seen[-1]))
            seen.append(n)
            out[n] = re.sub(r"\r?\n[ \t]+", " ", value).strip()
        return out

    def log_lines(self, *needles):
        return [l for l in self.tern.log_text().splitlines() if all(n in l for n in needles)]

    def wait_log(self, *needles, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_lines(*needles)
            if lines:
                return lines
            if time.monotonic() > deadline:
                self.fail("no log line with %s; lines with %s:\n%s" % (
                    needles, needles[0], "\n".join(self.log_lines(needles[0])[-10:])))
            time.sleep(0.1)


class DeliveryStatusNotifications(DSNCase):

    # ------------------------------------------------------------ failures
    def test_bounce_in_local_maildir_read_as_a_person(self):
        """5xx from the next hop: alice (local) finds the bounce in her
        Maildir: subject, plain text that says which address, why and what
        to do; the whole message returned; ORCPT decoded from xtext, ENVID."""
        tok = harness.token("bounce")
        rcpt = "nouser+x@fail.test"
        envid = "QQ+2B" + tok
        tok, qid = self.submit_to(LOCAL_SENDER, [rcpt], tok=tok, mail_params="ENVID=%s" % envid,
                                  rcpt_params={rcpt: "ORCPT=rfc822;nouser+2Bx@fail.test"})
        raw = self.tern.wait_for_token(tok, "alice", timeout=WAIT)
        self.assertTrue(raw.startswith(b"Return-Path: <>\n"), raw[:200])
        # as a mail reader sees it
        m = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(m["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(str(m["From"].addresses[0].addr_spec), "MAILER-DAEMON@" + MTA)
        text = " ".join(m.get_body(preferencelist=("plain",)).get_content().split())
        self.assertIn("<%s>: failed" % rcpt, text)
        self.assertIn("mx.fail.test", text)
        self.assertIn("550 5.1.1 receiver: no such user here", text)
        self.assertIn("What you can do:", text)
        self.assertIn("Check it for typing", text)
        # and field by field (Maildir has LF lines: compare as CRLF)
        rep = self.check_report(raw.split(b"\n", 2)[2].replace(b"\n", b"\r\n"), sender=LOCAL_SENDER)
        self.assertEqual(rep.per_message["original-envelope-id"], "QQ+" + tok, "ENVID decoded (RFC 3461 6.3(a))")
        self.assertTrue(is_date(rep.per_message["arrival-date"]))
        self.assertEqual(len(rep.rcpts), 1)
        r = rep.rcpts[0]
        self.assertEqual(r["original-recipient"], "rfc822;nouser+x@fail.test", "ORCPT decoded (RFC 3461 6.3(d))")
        self.assertEqual(r["final-recipient"], "rfc822;" + rcpt)
        self.assertEqual(r["action"], "failed")
        self.assertEqual(r["status"], "5.1.1")
        self.assertEqual(r["remote-mta"], "dns; mx.fail.test")
        self.assertEqual(r["diagnostic-code"], "smtp; 550 5.1.1 receiver: no such user here")
        self.assertTrue(is_date(r["last-attempt-date"]))
        # RET absent: the whole message (RFC 3461 4.3)
        self.assertEqual(rep.returned.get_content_type(), "message/rfc822")
        inner = rep.returned.get_payload()[0]
        self.assertEqual(inner["Subject"], tok)
        self.assertIn("body of %s" % tok, inner.get_payload())
        self.wait_log(qid, "event=dsn", "action=failed")

    def test_bounce_to_remote_sender_ret_hdrs(self):
        tok, qid = self.submit_to("s@back.test", ["nouser2@fail.test", "fine@fail.test"],
                                  mail_params="RET=HDRS")
        self.rcv["fail"].wait_transactions(1, tok, what="the accepted recipient")
        (rep,) = self.reports_at_back(tok, qid=qid, what="bounce to a remote sender")
        self.assertEqual(rep.msg["To"], "<s@back.test>")
        self.assertNotIn("original-envelope-id", rep.per_message, "no ENVID, no Original-Envelope-Id")
        self.assertEqual([r["final-recipient"] for r in rep.rcpts], ["rfc822;nouser2@fail.test"],
                         "only the failed recipient, no success without NOTIFY=SUCCESS")
        self.assertNotIn("original-recipient", rep.rcpts[0], "no ORCPT, no Original-Recipient")
        # RET=HDRS: the header only
        self.assertEqual(rep.returned.get_content_type(), "text/rfc822-headers")
        ret = rep.returned.get_payload()
        self.assertIn("Subject: %s" % tok, ret)
        self.assertNotIn("body of %s" % tok, ret)

    def test_one_report_for_failures_in_two_domains(self):
        """Failures in two relay jobs of one message (5xx from fail.test for
        two recipients, a domain that does not exist): the sender gets ONE
        report naming all three, not one per job (docs/dsn.md). A local
        mailbox that vanished fails at the scan: test_queue.c
        test_one_report_per_message covers it with the jobs."""
        nx = "x@nx2-%d.test" % os.getpid()
        rcpts = ["nouser6@fail.test", nx, "nouser7@fail.test"]
        tok, qid = self.submit_to("s@back.test", rcpts)
        (rep,) = self.reports_at_back(tok, qid=qid, what="one report per message")
        self.assertEqual(sorted(r["final-recipient"] for r in rep.rcpts),
                         sorted("rfc822;" + a for a in rcpts))
        for a in ("nouser6@fail.test", "nouser7@fail.test"):
            r = rep.rcpt(a)
            self.assertEqual(r["action"], "failed")
            self.assertEqual(r["remote-mta"], "dns; mx.fail.test")
            self.assertEqual(r["diagnostic-code"], "smtp; 550 5.1.1 receiver: no such user here")
        r = rep.rcpt(nx)
        self.assertEqual(r["status"], "5.1.2")
        self.assertNotIn("remote-mta", r, "decided by tern: no Remote-MTA")
        self.assertEqual(len(self.log_lines("id=%s event=dsn " % qid)), 1)

    def test_nxdomain_bounce(self):
        tok, qid = self.submit_to("s@back.test", ["someone@nx-%s.test" % os.getpid()])
        (rep,) = self.reports_at_back(tok, what="NXDOMAIN bounce")
        r = rep.rcpts[0]
        self.assertEqual(r["action"], "failed")
        self.assertEqual(r["status"], "5.1.2")
        self.assertNotIn("remote-mta", r, "decided by tern: no Remote-MTA")
        self.assertIn("does not exist", " ".join(rep.text.split()))

    def test_too_big_for_next_hop_and_truncated(self):
        tok = harness.token("big")
        filler = b"".join(b"filler line %05d of a message too big for small.test\r\n" % i
                          for i in range(120))
        body = harness.simple_body(tok, extra=filler)
        self.assertGreater(len(body), MAX_RETURN)
        tok, qid = self.submit_to("s@back.test", ["big@small.test"], body=body, tok=tok)
        (rep,) = self.reports_at_back(tok, what="too big")
        r = rep.rcpts[0]
        self.assertEqual(r["status"], "5.3.4")
        self.assertIn("too big", " ".join(rep.text.split()))
        # returned whole up to dsn_max_return_size, cut at a line end
        self.assertEqual(rep.returned.get_content_type(), "message/rfc822")
        inner = rep.returned.get_payload()[0]
        self.assertEqual(inner["Subject"], tok)
        self.assertIn("filler line 00000", inner.get_payload())
        self.assertNotIn("filler line 00119", inner.get_payload())
        self.assertLessEqual(len(inner.as_bytes()), MAX_RETURN + 200)
        self.assertIn("cut short", " ".join(rep.text.split()))

    # ------------------------------------------------------------ success
    def test_success_local_delivered(self):
        tok, qid = self.submit_to("s@back.test", ["bob@" + harness.DOMAIN],
                                  rcpt_params={"bob@" + harness.DOMAIN: "NOTIFY=SUCCESS"})
        self.tern.wait_for_token(tok, "bob")
        (rep,) = self.reports_at_back(tok, what="success report, local")
        self.assertEqual(rep.msg["Subject"], "Successful Mail Delivery Report")
        r = rep.rcpts[0]
        self.assertEqual(r["action"], "delivered")
        self.assertEqual(r["status"], "2.0.0")
        self.assertEqual(rep.returned.get_content_type(), "text/rfc822-headers", "RFC 3461 6.2: headers only")

    def test_success_relayed_to_peer_without_dsn(self):
        tok, qid = self.submit_to("s@back.test", ["r@ok.test"],
                                  rcpt_params={"r@ok.test": "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@ok.test"})
        tx = self.rcv["ok"].wait_transactions(1, tok)
        self.assertIsNone(tx[0].param("NOTIFY", "r@ok.test"), "NOTIFY to a peer without DSN")
        (rep,) = self.reports_at_back(tok, what="relayed report")
        r = rep.rcpts[0]
        self.assertEqual(r["action"], "relayed", "RFC 3461 5.2.2(b)")
        self.assertEqual(r["remote-mta"], "dns; mx.ok.test")
        self.assertEqual(r["original-recipient"], "rfc822;r@ok.test")

    def test_success_peer_with_dsn_gets_parameters_no_report(self):
        tok = harness.token("pass")
        rcpt = "p@dsnok.test"
        tok, qid = self.submit_to("s@back.test", [rcpt], tok=tok, mail_params="RET=FULL ENVID=E+2B" + tok,
                                  rcpt_params={rcpt: "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;p@dsnok.test"})
        tx = self.rcv["dsnok"].wait_transactions(1, tok)[0]
        self.assertEqual(str(tx.param("RET")).upper(), "FULL")
        self.assertEqual(tx.param("ENVID"), "E+2B" + tok)
        self.assertEqual(str(tx.param("NOTIFY", rcpt)).upper(), "SUCCESS,FAILURE")
        self.assertEqual(tx.param("ORCPT", rcpt), "rfc822;p@dsnok.test")
        self.assertNoReport(tok, qid, what="the next hop offers DSN: it reports, not tern")

    def test_no_success_report_without_notify(self):
        tok, qid = self.submit_to("s@back.test", ["plain@ok.test", "carol@" + harness.DOMAIN])
        self.rcv["ok"].wait_transactions(1, tok)
        self.tern.wait_for_token(tok, "carol")
        self.assertNoReport(tok, qid, what="no NOTIFY: failures and delays only")

    # ------------------------------------------------------------ no report
    def test_notify_never(self):
        tok, qid = self.submit_to("s@back.test", ["nouser3@fail.test"],
                                  rcpt_params={"nouser3@fail.test": "NOTIFY=NEVER"})
        self.wait_log(qid, "event=failed")
        self.assertNoReport(tok, qid, what="NOTIFY=NEVER")
        self.assertEqual(self.log_lines(qid, "event=dsn"), [])

    def test_null_sender_never_reported(self):
        tok, qid = self.submit_to("", ["nouser4@fail.test"])
        self.wait_log(qid, "event=failed")
        self.wait_reports_done(qid)
        self.assertEqual(self.log_lines(qid, "event=dsn"), [], "a report for a message from <>")

    def test_failing_report_is_dropped(self):
        tok, qid = self.submit_to("bounce-me@back.test", ["nouser5@fail.test"])
        lines = self.wait_log(qid, "event=dsn")
        rid = re.search(r"dsn_id=([0-9a-f]{16})", lines[0]).group(1)
        self.wait_log(rid, "event=failed")
        self.wait_log(rid, "event=removed")    # no report about it can come after this
        self.assertEqual(self.log_lines("id=%s event=dsn" % rid), [], "a report about a report")
        self.assertEqual(self.rcv["back"].transactions(tok), [])

    def test_null_mx_refused_at_rcpt_no_report(self):
        tok, qid, codes = self.submit_to("s@back.test", ["x@nullmx.test"])
        self.assertIsNone(qid)
        self.assertEqual(codes[0].code, 556)
        self.assertNoReport(tok, None, what="refused at RCPT")

    # ------------------------------------------------------------ delay, expiry
    def test_zz_delay_once_then_expired(self):
        # named to run last: the messages went in at class set-up
        tok, qid = self.slow_sub["warned"]
        tok2, qid2 = self.slow_sub["nodelay"]
        sub_t = time.monotonic()
        reps = self.reports_at_back(tok, n=2, timeout=LIFETIME + WAIT, what="delay then failure")
        acts = [r.rcpts[0]["action"] for r in reps]
        self.assertEqual(acts, ["delayed", "failed"], "one delay report, then the failure")
        d = reps[0]
        self.assertEqual(d.msg["Subject"], "Delayed Mail (still being retried)")
        r = d.rcpts[0]
        self.assertEqual(r["status"][:2], "4.")
        self.assertIn("will-retry-until", r)
        # RFC 3464 2.3.5/2.3.6: the Diagnostic-Code is the reply of the
        # last attempt's server, so Remote-MTA names it (a warning is only
        # owed once an attempt has ended: the recipient is deferred)
        self.assertIn("receiver: try again later", r["diagnostic-code"])
        self.assertEqual(r["remote-mta"], "dns; mx.slow.test")
        self.assertIn("last-attempt-date", r)
        until = email.utils.parsedate_to_datetime(r["will-retry-until"]).timestamp()
        arrival = email.utils.parsedate_to_datetime(d.per_message["arrival-date"]).timestamp()
        self.assertAlmostEqual(until - arrival, LIFETIME, delta=1)
        self.assertEqual(d.returned.get_content_type(), "text/rfc822-headers")
        self.assertIn("do not need to send", " ".join(d.text.split()))
        f = reps[1].rcpts[0]
        self.assertEqual(f["status"], "4.4.7")
        self.assertIn("Delivery time expired", f["diagnostic-code"])
        # tern's own diagnosis: no Remote-MTA; the server's last reply is
        # kept as text, in the diagnostic and the human-readable part
        self.assertNotIn("remote-mta", f)
        self.assertIn("receiver: try again later", " ".join(reps[1].text.split()))
        self.assertIn("could not be reached", " ".join(reps[1].text.split()))
        # retried many times, warned once: the W record holds
        self.assertGreaterEqual(len(self.rcv["slow"].rcpt_replies("wait@slow.test")), 5)
        # NOTIFY=FAILURE: the failure, never a delay report
        reps2 = self.reports_at_back(tok2, n=1, timeout=max(5, WAIT - (time.monotonic() - sub_t)),
                                     qid=qid2, what="NOTIFY=FAILURE")
        self.assertEqual([r.rcpts[0]["action"] for r in reps2], ["failed"])
        self.assertEqual(len(self.log_lines(qid, "event=dsn", "action=delayed")), 1)


if __name__ == "__main__":
    unittest.main()
