"""
test_data.py - what DATA stores, byte for byte.

RFC 5321 4.5.2 (dot-unstuffing), 4.4 (Received: prepended, nothing else
changed), 4.5.3.1.6 (998-octet text lines: 500 5.5.2 after the end of data,
not delivered, session goes on), RFC 1870 (message over the size limit: 552
5.3.4, not delivered), a client that disconnects mid-DATA (nothing
delivered, no partial file left in spool/incoming), NUL bytes in content,
and mail loops (RFC 5321 6.3: more Received: fields than
max_received_headers, 100 by default, is 554 5.4.6 at the end of DATA or
BDAT and nothing is queued; exactly 100 is delivered).
Maildir files use LF endings, so stored and sent text are compared after
CRLF -> LF.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, HOSTNAME, TernTestCase, crlf_to_lf  # noqa: E402

HEADER_NAMES_ADDED = ("return-path", "delivered-to", "received")


def split_added(stored, marker):
    """Split a stored message into (added header block, original)."""
    i = stored.find(marker)
    if i < 0:
        raise AssertionError("original message start %r not found in %r" % (marker, stored[:500]))
    if i > 0 and stored[i - 1:i] != b"\n":
        raise AssertionError("original does not start on a line: %r" % stored[:i + 50])
    return stored[:i], stored[i:]


def added_header_names(block):
    names = []
    for line in block.split(b"\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            continue   # folded continuation
        names.append(line.split(b":", 1)[0].decode("latin-1").lower())
    return names


class DataContent(TernTestCase):

    def _send_raw(self, user, wire_body, params=" BODY=8BITMIME"):
        """Send wire_body (already dot-stuffed, ending with CRLF.CRLF)."""
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>" + params), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (user, DOMAIN)), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(wire_body)
            r = c.read_reply()
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0", "session continues after the message")
            return r

    def test_byte_exact_with_dot_unstuffing(self):
        user = self.tern.fresh_user()
        tok = harness.token("exact")
        marker = ("X-Tern-Test: %s\r\n" % tok).encode()
        lines = [
            marker.rstrip(b"\r\n"),
            b"Subject: byte exact",
            b"From: <sender@client.test>",
            b"To: <%s@%s>" % (user.encode(), DOMAIN.encode()),
            b"Message-ID: <%s@client.test>" % tok.encode(),
            b"X-Folded: first",
            b"\tsecond part of a folded header",
            b"",
            b"line one",
            b".leading dot line",
            b"..two leading dots",
            b".",
            b"...",
            b". space after dot",
            b"trailing spaces   ",
            b"\ttab\tseparated\t",
            b"8bit: caf\xc3\xa9 \xe2\x82\xac \xff\xfe\x80",
            b"",
            b"",
            b"  indented",
            b"x" * 998,
            b"." + b"y" * 997,
            b"From the start of a line (no > quoting)",
            b"last line",
        ]
        original = b"\r\n".join(lines) + b"\r\n"
        r = self._send_raw(user, harness.dot_stuff(original) + b".\r\n")
        self.assertReply(r, 250, "2.0.0")
        self.assertTrue(harness.queue_id(r.text), r)
        stored = self.tern.wait_for_mail(user, 1)[0]
        added, body = split_added(stored, marker.rstrip(b"\r\n"))
        self.assertEqual(crlf_to_lf(body), crlf_to_lf(original))
        names = added_header_names(added)
        self.assertEqual(names[-1], "received", names)
        self.assertEqual(sorted(names), sorted(HEADER_NAMES_ADDED), names)
        self.assertIn(b"by " + HOSTNAME.encode(), b" ".join(added.split()))

    def test_headers_only_message(self):
        # A message of headers only, and one with no header/body separator.
        user = self.tern.fresh_user()
        tok = harness.token("hdronly")
        original = ("X-Tern-Test: %s\r\nSubject: headers only\r\n" % tok).encode()
        self.assertReply(self._send_raw(user, original + b".\r\n"), 250, "2.0.0")
        stored = self.tern.wait_for_mail(user, 1)[0]
        _, body = split_added(stored, b"X-Tern-Test: " + tok.encode())
        self.assertEqual(crlf_to_lf(body), crlf_to_lf(original))

    def test_empty_message(self):
        # DATA followed directly by the terminator: a valid, empty message.
        user = self.tern.fresh_user()
        self.assertReply(self._send_raw(user, b".\r\n"), 250, "2.0.0")
        stored = self.tern.wait_for_mail(user, 1)[0]
        self.assertTrue(stored.lower().startswith((b"return-path:", b"delivered-to:")), stored[:200])

    def test_data_line_limit_boundary(self):
        ok_user, bad_user = self.tern.fresh_user(), self.tern.fresh_user()
        tok = harness.token("998")
        body = harness.simple_body(tok) + b"a" * 998 + b"\r\n"
        self.assertReply(self._send_raw(ok_user, harness.dot_stuff(body) + b".\r\n"), 250, "2.0.0")
        m = self.tern.wait_for_token(tok, ok_user)
        self.assertIn(b"\n" + b"a" * 998 + b"\n", m)
        # RFC 5321 4.5.3.1.6: 1000 octets with CRLF is the most; 999 + CRLF is too long.
        tok2 = harness.token("999")
        body = harness.simple_body(tok2) + b"b" * 999 + b"\r\nafter\r\n"
        self.assertReply(self._send_raw(bad_user, harness.dot_stuff(body) + b".\r\n"), 500, "5.5.2")
        body = harness.simple_body(tok2) + b"c" * 100000 + b"\r\n"
        self.assertReply(self._send_raw(bad_user, harness.dot_stuff(body) + b".\r\n"), 500, "5.5.2")
        self.assertNoMail(bad_user)

    def test_dot_stuffed_long_line_counts_after_unstuffing(self):
        # RFC 5321 4.5.3.1.6: the limit does not count the transparency dot.
        user = self.tern.fresh_user()
        tok = harness.token("dot998")
        line = b"." + b"d" * 997          # 998 octets; 999 on the wire
        body = harness.simple_body(tok) + line + b"\r\n"
        self.assertReply(self._send_raw(user, harness.dot_stuff(body) + b".\r\n"), 250, "2.0.0")
        self.assertIn(b"\n" + line + b"\n", self.tern.wait_for_token(tok, user))

    def test_message_too_big(self):
        user = self.tern.fresh_user()
        tok = harness.token("big")
        line = b"z" * 78 + b"\r\n"
        body = harness.simple_body(tok) + line * (1300 * 1024 // 80)    # ~1.3 MB > 1M
        self.assertReply(self._send_raw(user, harness.dot_stuff(body) + b".\r\n"), 552, "5.3.4")
        self.assertNoMail(user)

    def test_message_just_under_limit(self):
        user = self.tern.fresh_user()
        tok = harness.token("under")
        line = b"w" * 78 + b"\r\n"
        body = harness.simple_body(tok) + line * (900 * 1024 // 80)      # ~900 KB < 1M
        self.assertReply(self._send_raw(user, harness.dot_stuff(body) + b".\r\n"), 250, "2.0.0")
        m = self.tern.wait_for_token(tok, user)
        self.assertEqual(m.count(b"w" * 78), 900 * 1024 // 80)

    def test_nul_bytes_in_content(self):
        # NUL is not text; tern must either refuse (5xx) or store it, never crash.
        user = self.tern.fresh_user()
        tok = harness.token("nul")
        body = harness.simple_body(tok) + b"before\x00after\r\n\x00\x00\r\n"
        r = self._send_raw(user, harness.dot_stuff(body) + b".\r\n")
        self.assertTrue(r.code == 250 or 500 <= r.code < 600, r)

    def test_disconnect_mid_data(self):
        user = self.tern.fresh_user()
        for cut in (b"", b"Subject: cut\r\n\r\npartial body", b"Subject: cut\r\n\r\nline\r\n.",
                    b"Subject: cut\r\n\r\nline\r\n.\r"):
            c = self.tern.session()
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (user, DOMAIN)), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            if cut:
                c.send(cut)
            time.sleep(0.2)
            c.close()
        self.tern.wait_incoming_empty()
        self.assertNoMail(user)
        # and tern still works
        tok, _ = self.tern.send([user + "@" + DOMAIN])
        self.tern.wait_for_mail(user, 1, exact=True)

    def test_disconnect_mid_bdat(self):
        user = self.tern.fresh_user()
        c = self.tern.session()
        self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (user, DOMAIN)), 250, "2.1.5")
        c.send(b"BDAT 1000 LAST\r\nSubject: cut\r\n\r\nonly part")
        time.sleep(0.2)
        c.close()
        self.tern.wait_incoming_empty()
        self.assertNoMail(user)

    def test_many_messages_one_connection(self):
        user = self.tern.fresh_user()
        toks = []
        with self.tern.session() as c:
            for i in range(20):
                t = harness.token("conn%d" % i)
                toks.append(t)
                self.assertReply(c.send_message("sender@client.test", [user + "@" + DOMAIN],
                                                 harness.simple_body(t)), 250, "2.0.0")
        msgs = self.tern.wait_for_mail(user, 20, exact=True)
        for t in toks:
            self.assertEqual(sum(1 for m in msgs if t.encode() in m), 1, t)


class MailLoop(TernTestCase):
    """RFC 5321 6.3 with the default max_received_headers (100): the
    Received: fields the client sent are counted, tern's own is not."""

    LIMIT = 100

    def _message(self, tok, nreceived):
        hops = b"".join(b"Received: from hop%d.test by hop%d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                        % (i, i + 1) for i in range(nreceived))
        return hops + harness.simple_body(tok)

    def _send(self, user, body, bdat):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (user, DOMAIN)), 250, "2.1.5")
            if bdat:
                half = len(body) // 2
                c.send(b"BDAT %d\r\n" % half + body[:half])
                self.assertReply(c.read_reply(), 250, "2.0.0")
                c.send(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
            else:
                self.assertReply(c.cmd("DATA"), 354)
                c.send(harness.dot_stuff(body) + b".\r\n")
            r = c.read_reply()
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0", "session continues after the message")
            return r

    def _check(self, bdat):
        user = self.tern.fresh_user()
        over = harness.token("loop")
        r = self._send(user, self._message(over, self.LIMIT + 1), bdat)
        self.assertReply(r, 554, "5.4.6")
        self.assertIn("mail loop", r.text)
        at = harness.token("atlimit")
        r = self._send(user, self._message(at, self.LIMIT), bdat)
        self.assertReply(r, 250, "2.0.0")
        m = self.tern.wait_for_token(at, user)
        self.assertEqual(m.count(b"\nReceived: "), self.LIMIT + 1, "tern adds its own")
        self.tern.wait_incoming_empty()
        self.assertFalse(self.tern.spool_files_containing(over), "looping message queued")
        self.assertFalse(any(over.encode() in x for x in self.tern.messages(user)))

    def test_data(self):
        self._check(bdat=False)

    def test_bdat(self):
        self._check(bdat=True)
