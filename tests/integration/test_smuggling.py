"""
test_smuggling.py - SMTP smuggling (the CVE-2023-51764 class), both policies.

Only <CR><LF>.<CR><LF> ends DATA (RFC 5321 4.1.1.4). For each non-standard
end-of-data sequence, a client sends one message whose body contains the
sequence followed by a complete second transaction (MAIL/RCPT/DATA/body/.)
to another recipient, then a real end of data. Exactly one reply must come
for the whole thing, the next command (NOOP) must get its own 250 2.0.0,
and the smuggled recipient must get nothing:

  bare_newline normalize: the victim gets exactly one message, which holds
                          the "smuggled" text as body content.
  bare_newline reject:    the message is refused with 550 5.5.2; a clean
                          follow-up message arrives exactly once.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase, crlf_to_lf  # noqa: E402

# name -> (sequence placed after "first part", or at the start of the content)
SEQUENCES = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "cr_dot_cr": b"\r.\r",
    "cr_dot_crlf": b"\r.\r\n",
    "crlf_dot_lf": b"\r\n.\n",
    "crlf_dot_cr": b"\r\n.\r",
    "crlf_dot_cr_crlf": b"\r\n.\r\r\n",
    "lf_dot_cr": b"\n.\r",
    "crlf_dot_nul_crlf": b"\r\n.\x00\r\n",
    "at_start_dot_lf": None,                 # ".\n" as the first content bytes
}


def smuggle_payload(seq, victim_tok, smug_user):
    """The attack as sent: the smuggled transaction ends with the one real
    CRLF.CRLF, which a correct server takes as the end of the only message."""
    smuggled = ("MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<%s@%s>\r\nDATA\r\n"
                "Subject: smuggled %s\r\n\r\nsmuggled-body-%s\r\n.\r\n"
                % (smug_user, DOMAIN, victim_tok, victim_tok)).encode()
    if seq is None:
        return b".\n" + smuggled
    head = ("Subject: legit %s\r\nX-Tern-Test: %s\r\n\r\nfirst part" % (victim_tok, victim_tok)).encode()
    return head + seq + smuggled


class SmugglingBase:
    POLICY = None

    def _attempt(self, name):
        seq = SEQUENCES[name]
        victim, smug = self.tern.fresh_user(), self.tern.fresh_user()
        tok = harness.token("smug-" + name)
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (victim, DOMAIN)), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(smuggle_payload(seq, tok, smug))
            end = c.read_reply()
            # Had the server seen an end of data inside, the smuggled MAIL's
            # "250 2.1.0" would now answer our NOOP.
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0", "reply after the message (smuggled command?)")
            self.assertNotIn("queued", c.replies[-1].text)
            self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
        return end, victim, smug, tok, seq


class SmugglingNormalize(SmugglingBase, TernTestCase):
    TERN_OPTIONS = {"options": {"bare_newline": "normalize"}}

    def _check(self, name):
        end, victim, smug, tok, seq = self._attempt(name)
        if seq is not None and b"\x00" in seq and end.code >= 500:
            self.assertNoMail(victim)          # refused because of the NUL: fine
            self.assertNoMail(smug)
            return
        self.assertReply(end, 250, "2.0.0", "end of the one message")
        msgs = self.tern.wait_for_mail(victim, 1, exact=True)
        self.assertIn(b"smuggled-body-" + tok.encode(), msgs[0], "smuggled text is body content")
        norm = crlf_to_lf(msgs[0])
        self.assertNotIn(b"\r", norm, "stored lines end in CRLF only (no bare CR left)")
        self.assertNoMail(smug)

    def test_bare_lf_becomes_line_break(self):
        user = self.tern.fresh_user()
        tok = harness.token("barelf")
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (user, DOMAIN)), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(("X-Tern-Test: %s\r\nSubject: bare lf\r\n\r\none\ntwo\r\nthree\n.four\r\n.\r\n" % tok).encode())
            self.assertReply(c.read_reply(), 250, "2.0.0")
        m = crlf_to_lf(self.tern.wait_for_mail(user, 1, exact=True)[0])
        i = m.find(b"X-Tern-Test: " + tok.encode())
        body = m[i:].split(b"\n\n", 1)[1]
        self.assertTrue(body.startswith(b"one\ntwo\nthree\n"), body)


class SmugglingReject(SmugglingBase, TernTestCase):
    TERN_OPTIONS = {"options": {"bare_newline": "reject"}}

    def _check(self, name):
        end, victim, smug, tok, seq = self._attempt(name)
        if name == "crlf_dot_nul_crlf":
            # CRLF . NUL CRLF has no bare newline: either stored whole or refused.
            if end.code == 250:
                self.tern.wait_for_mail(victim, 1, exact=True)
            else:
                self.assertTrue(end.code >= 500, end)
                self.assertNoMail(victim)
            self.assertNoMail(smug)
            return
        self.assertReply(end, 550, "5.5.2", "bare CR/LF refused")
        self.assertNoMail(victim)
        self.assertNoMail(smug)
        tok2, _ = self.tern.send([victim + "@" + DOMAIN])
        msgs = self.tern.wait_for_mail(victim, 1, exact=True)
        self.assertIn(tok2.encode(), msgs[0])
        self.assertNoMail(smug)

    def test_bare_lf_in_headers_refused(self):
        user = self.tern.fresh_user()
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (user, DOMAIN)), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"Subject: bare lf\nX-Other: y\r\n\r\nbody\r\n.\r\n")
            self.assertReply(c.read_reply(), 550, "5.5.2")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertNoMail(user)

    def test_clean_message_accepted(self):
        user = self.tern.fresh_user()
        tok, _ = self.tern.send([user + "@" + DOMAIN])
        self.tern.wait_for_token(tok, user)


def _make(name):
    def t(self):
        self._check(name)
    t.__name__ = "test_smuggle_" + name
    t.__doc__ = "smuggling sequence %r" % (SEQUENCES[name],)
    return t


for _name in SEQUENCES:
    for _cls in (SmugglingNormalize, SmugglingReject):
        setattr(_cls, "test_smuggle_" + _name, _make(_name))
del _name, _cls
