"""
test_swaks.py - mail sent with swaks (a real, independent SMTP client).

Plain ESMTP, --pipeline, a body with dotted lines (swaks dot-stuffs them;
they must arrive as written), --protocol ESMTP and SMTP (HELO), several
recipients, and a refused recipient (swaks fails). Every server reply
line in swaks' transcript is checked for RFC 2034 enhanced codes.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase, crlf_to_lf  # noqa: E402


class Swaks(TernTestCase):

    def setUp(self):
        if not shutil.which("swaks"):
            self.skipTest("swaks not installed (make deps)")
        super().setUp()

    def swaks(self, *args, expect_rc=0):
        cmd = ["swaks", "--server", "127.0.0.1:%d" % self.tern.port, "--helo", "client.test",
               "--timeout", "30"] + list(args)
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        out = p.stdout.decode("utf-8", "replace")
        if expect_rc is not None and p.returncode != expect_rc:
            self.fail("swaks exited %d (expected %d):\n%s" % (p.returncode, expect_rc, out))
        self.check_transcript(out)
        return out

    def check_transcript(self, out):
        """Server lines are '<-  ' (ok) or '<** ' (error); group them into
        replies and check all but the greeting and the EHLO/HELO answer."""
        last_cmd = None
        cur = []
        nreplies = 0
        for line in out.splitlines():
            m = re.match(r"^ *(<-|<\*\*|->|\*\*\*|~>|<~|===) ?\s*(.*)$", line)
            if not m:
                continue
            tag, text = m.groups()
            if tag in ("->", "~>"):
                last_cmd = text.split(" ", 1)[0].upper()
                continue
            if tag not in ("<-", "<**"):
                continue
            cur.append(text.encode())
            if len(text) < 4 or text[3:4] != "-":
                r = harness.parse_reply_lines(cur)
                cur = []
                nreplies += 1
                if nreplies > 1 and last_cmd not in ("EHLO", "HELO"):
                    harness.check_enhanced(r, " (swaks after %s)" % last_cmd)
        return nreplies

    def test_plain(self):
        tok = harness.token("swaks")
        out = self.swaks("--to", "alice@" + DOMAIN, "--from", "sender@client.test",
                         "--header", "Subject: %s" % tok)
        self.assertRegex(out, r"<-  250 2\.0\.0 Ok: queued as [0-9A-Fa-f]{16}")
        m = self.tern.wait_for_token(tok, "alice")
        self.assertIn(b"Subject: " + tok.encode(), m)

    def test_pipeline(self):
        tok = harness.token("swakspipe")
        self.swaks("--pipeline", "--to", "bob@%s,carol@%s" % (DOMAIN, DOMAIN), "--from", "sender@client.test",
                   "--header", "Subject: %s" % tok)
        self.tern.wait_for_token(tok, "bob")
        self.tern.wait_for_token(tok, "carol")

    def test_body_with_dots(self):
        tok = harness.token("swaksdots")
        body = ".starts with a dot\n..two dots\n.\n...\nend %s\n" % tok
        d = tempfile.mkdtemp(prefix="tern-swaks-")
        try:
            p = os.path.join(d, "body.txt")
            with open(p, "w") as f:
                f.write(body)
            self.swaks("--to", "dave@" + DOMAIN, "--from", "sender@client.test",
                       "--header", "Subject: %s" % tok, "--body", "@" + p)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        m = crlf_to_lf(self.tern.wait_for_token(tok, "dave"))
        self.assertIn(body.encode(), m)

    def test_protocol_esmtp(self):
        tok = harness.token("swaksesmtp")
        out = self.swaks("--protocol", "ESMTP", "--to", "erin@" + DOMAIN, "--from", "sender@client.test",
                         "--header", "Subject: %s" % tok)
        self.assertIn("-> EHLO client.test", out)
        self.tern.wait_for_token(tok, "erin")

    def test_protocol_smtp_helo(self):
        tok = harness.token("swakssmtp")
        out = self.swaks("--protocol", "SMTP", "--to", "frank@" + DOMAIN, "--from", "sender@client.test",
                         "--header", "Subject: %s" % tok)
        self.assertIn("-> HELO client.test", out)
        self.tern.wait_for_token(tok, "frank")

    def test_alias_and_second_domain(self):
        tok = harness.token("swaksalias")
        self.swaks("--to", "team@%s,info@second.test" % DOMAIN, "--from", "<>",
                   "--header", "Subject: %s" % tok)
        self.tern.wait_for_token(tok, "alice")
        self.tern.wait_for_token(tok, "bob")
        self.tern.wait_for_token(tok, "info", "second.test")

    def test_refused_recipient(self):
        out = self.swaks("--to", "nosuchuser@" + DOMAIN, "--from", "sender@client.test", expect_rc=None)
        self.assertRegex(out, r"<\*\* +550 5\.1\.1")
        out = self.swaks("--to", "someone@other.test", "--from", "sender@client.test", expect_rc=None)
        # 127.0.0.1 is in relay_networks by default here: accepted and queued
        self.assertRegex(out, r"<-  250 2\.1\.5")

    def test_quit_after_rcpt(self):
        out = self.swaks("--to", "alice@" + DOMAIN, "--from", "sender@client.test", "--quit-after", "RCPT")
        self.assertIn("<-  221 2.0.0", out)
