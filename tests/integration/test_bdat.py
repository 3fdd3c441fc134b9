"""
test_bdat.py - CHUNKING (RFC 3030).

BDAT n replies "250 2.0.0 n octets received"; BDAT n LAST queues. Chunk
content is stored as sent (no dot-unstuffing: a "." line stays "."), split
anywhere. BDAT outside a transaction still consumes its octets and says
503 5.5.1; DATA after BDAT is 503 5.5.1; BDAT with no valid recipient is
554 5.5.1; a too-big message is 552 5.3.4; pipelined BDAT transactions;
an end-marker other than LAST (any case) is 501 5.5.4 at once, with no
octets consumed.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase, crlf_to_lf  # noqa: E402


class Bdat(TernTestCase):

    def _begin(self, c, user):
        self.assertReply(c.cmd("MAIL FROM:<sender@client.test> BODY=8BITMIME"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (user, DOMAIN)), 250, "2.1.5")

    def _chunk(self, c, data, last=False):
        c.send(b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data)
        return c.read_reply()

    def test_chunks_byte_exact(self):
        user = self.tern.fresh_user()
        tok = harness.token("bdat")
        content = (b"X-Tern-Test: " + tok.encode() + b"\r\nSubject: chunked\r\n\r\n"
                   b"line one\r\n.\r\n..two dots stay two\r\n.leading dot\r\n"
                   b"8bit \xc3\xa9\xff\r\nBDAT 5\r\nMAIL FROM:<evil@x.test>\r\n\r\nend\r\n")
        with self.tern.session() as c:
            self._begin(c, user)
            # cut in awkward places: mid-line, between CR and LF, right after "\r\n."
            cuts = [7, content.index(b"\r\n.\r\n") + 3, content.index(b"\r\n.\r\n") + 4, len(content) - 3]
            pos = 0
            for cut in cuts:
                part = content[pos:cut]
                r = self._chunk(c, part)
                self.assertReply(r, 250, "2.0.0")
                self.assertTrue(re.match(r"^2\.0\.0 %d octets received" % len(part), r.lines[0]), r)
                pos = cut
            r = self._chunk(c, content[pos:], last=True)
            self.assertReply(r, 250, "2.0.0")
            self.assertTrue(harness.queue_id(r.text), r)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        stored = self.tern.wait_for_mail(user, 1, exact=True)[0]
        i = stored.find(b"X-Tern-Test: " + tok.encode())
        self.assertGreater(i, 0)
        self.assertEqual(crlf_to_lf(stored[i:]), crlf_to_lf(content))
        self.assertIn(b"\n.\n..two dots stay two\n", stored)

    def test_bdat_zero_last(self):
        user = self.tern.fresh_user()
        tok = harness.token("bdat0")
        body = harness.simple_body(tok)
        with self.tern.session() as c:
            self._begin(c, user)
            self.assertReply(self._chunk(c, body), 250, "2.0.0")
            r = self._chunk(c, b"", last=True)
            self.assertReply(r, 250, "2.0.0")
            self.assertTrue(harness.queue_id(r.text), r)
        self.tern.wait_for_token(tok, user)

    def test_bdat_single_last_chunk_and_second_transaction(self):
        user = self.tern.fresh_user()
        toks = [harness.token("bdat1"), harness.token("bdat2")]
        with self.tern.session() as c:
            for t in toks:
                self._begin(c, user)
                self.assertReply(self._chunk(c, harness.simple_body(t), last=True), 250, "2.0.0")
        msgs = self.tern.wait_for_mail(user, 2, exact=True)
        for t in toks:
            self.assertEqual(sum(1 for m in msgs if t.encode() in m), 1)

    def test_bdat_without_mail_consumes_octets(self):
        with self.tern.session() as c:
            # If the octets were not consumed, "HELP" would get a 214.
            payload = b"HELP\r\n"
            c.send(b"BDAT %d\r\n" % len(payload) + payload)
            self.assertReply(c.read_reply(), 503, "5.5.1")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            c.send(b"BDAT %d LAST\r\n" % len(payload) + payload)
            self.assertReply(c.read_reply(), 503, "5.5.1")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            # MAIL but no RCPT
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            c.send(b"BDAT %d LAST\r\n" % len(payload) + payload)
            self.assertReply(c.read_reply(), 503, "5.5.1")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_bdat_no_valid_recipients(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<nosuchuser@%s>" % DOMAIN), 550, "5.1.1")
            payload = b"HELP\r\n"
            c.send(b"BDAT %d LAST\r\n" % len(payload) + payload)
            self.assertReply(c.read_reply(), 554, "5.5.1")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_data_after_bdat(self):
        user = self.tern.fresh_user()
        with self.tern.session() as c:
            self._begin(c, user)
            self.assertReply(self._chunk(c, b"Subject: x\r\n"), 250, "2.0.0")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
        self.assertNoMail(user)

    def test_bdat_after_rset_discards(self):
        user = self.tern.fresh_user()
        with self.tern.session() as c:
            self._begin(c, user)
            self.assertReply(self._chunk(c, b"Subject: discarded\r\n\r\nfirst chunk\r\n"), 250, "2.0.0")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            tok = harness.token("afterrset")
            self._begin(c, user)
            self.assertReply(self._chunk(c, harness.simple_body(tok), last=True), 250, "2.0.0")
        m = self.tern.wait_for_mail(user, 1, exact=True)[0]
        self.assertIn(tok.encode(), m)
        self.assertNotIn(b"first chunk", m)

    def test_bdat_bad_syntax(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")
            for line in ("BDAT", "BDAT abc", "BDAT -1", "BDAT 1x"):
                self.assertReply(c.cmd(line), 501, "5.5.4", line)

    def test_bdat_bad_end_marker(self):
        # RFC 3030 2: end-marker = "LAST". "BDAT n FOO" is a 501 at once;
        # tern must not wait for n octets (they would never come), and the
        # transaction goes on: "BDAT 10 LAST" and "bdat 10 last" still work.
        user = self.tern.fresh_user()
        toks = [harness.token("bdatlast"), harness.token("bdatlower")]
        with self.tern.session() as c:
            self._begin(c, user)
            for line in ("BDAT 10 FOO", "BDAT 10 LAST LAST", "BDAT 10 LASTLY", "BDAT 0 X"):
                self.assertReply(c.cmd(line), 501, "5.5.4", line)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            for verb, tok in zip((b"BDAT %d LAST", b"bdat %d last"), toks):
                body = harness.simple_body(tok)
                c.send(verb % len(body) + b"\r\n" + body)
                r = c.read_reply()
                self.assertReply(r, 250, "2.0.0")
                self.assertTrue(harness.queue_id(r.text), r)
                if tok is toks[0]:
                    self._begin(c, user)
        for tok in toks:
            self.tern.wait_for_token(tok, user)

    def test_bdat_too_big(self):
        user = self.tern.fresh_user()
        with self.tern.session() as c:
            self._begin(c, user)
            chunk = (b"y" * 998 + b"\r\n") * 400          # 400 KB per chunk
            # RFC 3030 2: after a 4xx/5xx to a chunk the client sends no more.
            r = None
            for i in range(3):
                r = self._chunk(c, chunk)
                if r.code != 250:
                    break
            else:
                r = self._chunk(c, b"end\r\n", last=True)
            self.assertReply(r, 552, "5.3.4")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertNoMail(user)

    def test_bdat_huge_declared_size(self):
        # A declared size far over the limit must not make tern buffer or wait for it.
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")
            c.send(b"BDAT 99999999999999999999 LAST\r\n")
            r = c.read_reply()
            self.assertIn((r.code, r.enh), ((552, "5.3.4"), (501, "5.5.4")), r)

    def test_bdat_pipelined_transactions(self):
        users = [self.tern.fresh_user() for _ in range(3)]
        toks = [harness.token("pbdat%d" % i) for i in range(3)]
        batch = b""
        for u, t in zip(users, toks):
            body = harness.simple_body(t)
            batch += (b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<%s@%s>\r\nBDAT %d LAST\r\n"
                      % (u.encode(), DOMAIN.encode(), len(body)) + body)
        batch += b"QUIT\r\n"
        with self.tern.session() as c:
            c.send(batch)
            for _ in users:
                self.assertReply(c.read_reply(), 250, "2.1.0")
                self.assertReply(c.read_reply(), 250, "2.1.5")
                r = self.assertReply(c.read_reply(), 250, "2.0.0")
                self.assertTrue(harness.queue_id(r.text), r)
            self.assertReply(c.read_reply(), 221, "2.0.0")
        for u, t in zip(users, toks):
            self.tern.wait_for_token(t, u)
