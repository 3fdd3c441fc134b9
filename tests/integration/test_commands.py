"""
test_commands.py - every SMTP verb and error class over a raw socket.

RFC 5321 (verbs, sequence, 4.5.3.1.4 line length), RFC 2034/3463 (enhanced
codes, checked on every reply by the harness), RFC 1870 (SIZE), RFC 6152
(8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 (DSN parameters), RFC 3030
(BODY=BINARYMIME refused: no BINARYMIME advertised).
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, HOSTNAME, TernTestCase  # noqa: E402


class GreetingAndEhlo(TernTestCase):

    def test_greeting(self):
        with self.tern.client() as c:
            g = c.greeting()
            self.assertEqual(g.code, 220)
            self.assertEqual(len(g.lines), 1, g)
            self.assertTrue(re.match(r"^%s ESMTP tern\b" % re.escape(HOSTNAME), g.lines[0]), g)

    def test_ehlo_keywords(self):
        with self.tern.client() as c:
            c.greeting()
            r = c.ehlo("client.test")
            self.assertEqual(r.code, 250)
            self.assertTrue(len(r.lines) > 1, r)
            self.assertEqual(r.lines[0].split()[0], HOSTNAME, r)
            for kw in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN", "CHUNKING"):
                self.assertIn(kw, c.extensions, "EHLO lacks %s: %r" % (kw, r))
            self.assertIn(c.extensions["SIZE"], ("1048576", "1000000"), "SIZE must advertise max_message_size 1M")
            # Not advertised: the server does not do them in this issue.
            for kw in ("BINARYMIME", "STARTTLS", "AUTH"):
                self.assertNotIn(kw, c.extensions)

    def test_helo(self):
        with self.tern.client() as c:
            c.greeting()
            r = c.cmd("HELO client.test", check=False)
            self.assertEqual(r.code, 250)
            self.assertEqual(len(r.lines), 1)
            self.assertEqual(r.lines[0].split()[0], HOSTNAME)
            # A HELO session can send mail.
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")

    def test_ehlo_twice_resets(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertEqual(c.ehlo("again.test").code, 250)
            # RFC 5321 4.1.4: EHLO resets the transaction, so MAIL is fresh.
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")

    def test_ehlo_without_argument(self):
        with self.tern.client() as c:
            c.greeting()
            r = c.cmd("EHLO", check=False)
            self.assertEqual(r.code, 501, r)

    def test_lowercase_verbs(self):
        with self.tern.client() as c:
            c.greeting()
            self.assertEqual(c.cmd("ehlo client.test", check=False).code, 250)
            self.assertReply(c.cmd("mail from:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("rcpt to:<alice@%s>" % DOMAIN), 250, "2.1.5")
            self.assertReply(c.cmd("rset"), 250, "2.0.0")
            self.assertReply(c.cmd("nOoP"), 250, "2.0.0")


class Verbs(TernTestCase):

    def test_noop_rset_quit(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.cmd("NOOP some string"), 250, "2.0.0")   # RFC 5321 4.1.1.9
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
            self.assertTrue(c.wait_closed(), "server did not close after QUIT")

    def test_vrfy(self):
        with self.tern.session() as c:
            for arg in ("alice", "alice@%s" % DOMAIN, "nosuchuser"):
                r = c.cmd("VRFY " + arg)
                self.assertEqual(r.code, 252, r)
                self.assertTrue(r.enh and r.enh.startswith("2."), r)
            self.assertReply(c.cmd("VRFY"), 501, "5.5.4")

    def test_help(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("HELP"), 214, "2.0.0")
            self.assertReply(c.cmd("HELP MAIL"), 214, "2.0.0")

    def test_not_implemented(self):
        with self.tern.session() as c:
            for line in ("EXPN team", "TURN", "ETRN %s" % DOMAIN):
                self.assertReply(c.cmd(line), 502, "5.5.1", line)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_unknown_command(self):
        with self.tern.session() as c:
            for line in ("FOO", "XYZZY bar", "MAILFROM:<a@b>", "DATAX"):
                self.assertReply(c.cmd(line), 500, "5.5.1", line)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_verbs_without_arguments_take_none(self):
        # RFC 5321 4.1.1: RSET, DATA, QUIT take no parameters.
        with self.tern.session() as c:
            self.assertReply(c.cmd("RSET junk"), 501, "5.5.4")
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")
            self.assertReply(c.cmd("DATA junk"), 501, "5.5.4")
            # QUIT with junk: tern may refuse (RFC grammar) or just leave, as Postfix does.
            r = c.cmd("QUIT now")
            self.assertIn((r.code, r.enh), ((501, "5.5.4"), (221, "2.0.0")), r)


class Sequence(TernTestCase):

    def test_mail_before_ehlo(self):
        with self.tern.client() as c:
            c.greeting()
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 503, "5.5.1")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 503, "5.5.1")

    def test_rcpt_before_mail(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 503, "5.5.1")

    def test_data_before_mail_and_before_rcpt(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")
            # the session is still usable
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")

    def test_nested_mail(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("MAIL FROM:<b@client.test>"), 503, "5.5.1")

    def test_rset_clears_transaction(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 503, "5.5.1")
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")

    def test_data_with_only_failed_recipients(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<nosuchuser@%s>" % DOMAIN), 550, "5.1.1")
            # RFC 2920 3.1: no valid recipients -> 554 (5.5.1).
            self.assertReply(c.cmd("DATA"), 554, "5.5.1")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")


class Syntax(TernTestCase):

    def test_address_syntax(self):
        with self.tern.session() as c:
            for a in ("<alice@@client.test>", "<a b@client.test>", "<alice@>", "<@client.test>", "<alice@client..test>"):
                self.assertReply(c.cmd("MAIL FROM:" + a), 501, "5.1.7", "MAIL FROM:" + a)
        with self.tern.session() as c:      # a new session: stay under max_errors
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            for a in ("<alice@@%s>" % DOMAIN, "<a b@%s>" % DOMAIN, "<alice@>",
                      "<alice.@%s>" % DOMAIN, "<.alice@%s>" % DOMAIN, "<a..b@%s>" % DOMAIN):
                self.assertReply(c.cmd("RCPT TO:" + a), 501, "5.1.3", "RCPT TO:" + a)
            r = c.cmd("RCPT TO:<alice@%s" % DOMAIN)     # unbalanced: address or argument syntax
            self.assertEqual(r.code, 501, r)
            self.assertIn(r.enh, ("5.1.3", "5.5.4"), r)
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")

    def test_argument_syntax(self):
        with self.tern.session() as c:
            for line in ("MAIL", "MAIL TO:<a@client.test>", "MAIL FROM"):
                r = c.cmd(line)
                self.assertEqual(r.code, 501, "%s -> %r" % (line, r))
                self.assertIn(r.enh, ("5.5.4", "5.5.2", "5.1.7"), "%s -> %r" % (line, r))
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            for line in ("RCPT", "RCPT FROM:<alice@%s>" % DOMAIN):
                r = c.cmd(line)
                self.assertEqual(r.code, 501, "%s -> %r" % (line, r))
                self.assertIn(r.enh, ("5.5.4", "5.5.2", "5.1.3"), "%s -> %r" % (line, r))

    def test_null_sender(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")

    def test_quoted_local_part_and_literal_sender(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd('MAIL FROM:<"john doe"@client.test>'), 250, "2.1.0")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(c.cmd("MAIL FROM:<john@[192.0.2.1]>"), 250, "2.1.0")

    def test_unknown_parameters(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test> FOO=BAR"), 555, "5.5.4")
            self.assertReply(c.cmd("MAIL FROM:<a@client.test> NOTIFY=SUCCESS"), 555, "5.5.4")  # RCPT-only
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s> FOO=BAR" % DOMAIN), 555, "5.5.4")
            self.assertReply(c.cmd("RCPT TO:<alice@%s> SIZE=10" % DOMAIN), 555, "5.5.4")    # MAIL-only


class Parameters(TernTestCase):

    def _mail(self, params):
        with self.tern.session() as c:
            return c.cmd("MAIL FROM:<a@client.test> " + params)

    def test_size(self):
        limit = None
        with self.tern.client() as c:
            c.greeting()
            c.ehlo()
            limit = int(c.extensions["SIZE"])
        self.assertReply(self._mail("SIZE=100"), 250, "2.1.0")
        self.assertReply(self._mail("SIZE=%d" % limit), 250, "2.1.0")
        self.assertReply(self._mail("SIZE=%d" % (limit + 1)), 552, "5.3.4")
        r = self._mail("SIZE=99999999999999999999999")   # overflow: too big or bad value, never 250
        self.assertIn((r.code, r.enh), ((552, "5.3.4"), (501, "5.5.4")), r)
        self.assertReply(self._mail("SIZE=abc"), 501, "5.5.4")
        self.assertReply(self._mail("SIZE="), 501, "5.5.4")
        self.assertReply(self._mail("size=100"), 250, "2.1.0")

    def test_body(self):
        self.assertReply(self._mail("BODY=8BITMIME"), 250, "2.1.0")
        self.assertReply(self._mail("BODY=7BIT"), 250, "2.1.0")
        self.assertReply(self._mail("body=8bitmime"), 250, "2.1.0")
        self.assertReply(self._mail("BODY=FOO"), 501, "5.5.4")
        self.assertReply(self._mail("BODY=BINARYMIME"), 504, "5.5.4")

    def test_smtputf8(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<jörg@client.test>"), 553, "5.6.7")
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<jörg@%s>" % DOMAIN), 553, "5.6.7")
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<jörg@client.test> SMTPUTF8"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")
            self.assertReply(c.cmd("RCPT TO:<jörg@%s>" % DOMAIN), 550, "5.1.1")   # UTF-8 ok, unknown user
            self.assertReply(c.cmd("DATA"), 354)
            tok = harness.token("utf8")
            c.send(harness.dot_stuff(harness.simple_body(tok, subject="Grüße")) + b".\r\n")
            self.assertReply(c.read_reply(), 250, "2.0.0")
        m = self.tern.wait_for_token(tok, "alice")
        self.assertIn("Grüße".encode(), m)
        self.assertIn("jörg@client.test".encode(), m)   # in Return-Path

    def test_dsn_parameters_accepted(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test> RET=HDRS ENVID=QQ+2Bxyz"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<alice@%s> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;alice@%s"
                                   % (DOMAIN, DOMAIN)), 250, "2.1.5")
            self.assertReply(c.cmd("RCPT TO:<bob@%s> NOTIFY=NEVER" % DOMAIN), 250, "2.1.5")
            self.assertReply(c.cmd("RCPT TO:<carol@%s> ORCPT=rfc822;carol+2B1@%s" % (DOMAIN, DOMAIN)), 250, "2.1.5")
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<> RET=FULL"), 250, "2.1.0")

    def test_dsn_parameters_bad_values(self):
        for params in ("RET=X", "RET=", "ENVID=bad+ZZ", "ENVID=bad+4"):
            self.assertReply(self._mail(params), 501, "5.5.4", params)
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            for params in ("NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=", "ORCPT=nosemicolon",
                           "ORCPT=rfc822;bad+QQ@x.test"):
                self.assertReply(c.cmd("RCPT TO:<alice@%s> %s" % (DOMAIN, params)), 501, "5.5.4", params)
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")


class Recipients(TernTestCase):

    def test_unknown_local_user(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<nosuchuser@%s>" % DOMAIN), 550, "5.1.1")
            self.assertReply(c.cmd("RCPT TO:<nosuchuser@second.test>"), 550, "5.1.1")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5")

    def test_known_recipients(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            for rc in ("alice@" + DOMAIN, "ALICE@EXAMPLE.TEST", "carol@" + DOMAIN, "team@" + DOMAIN,
                       "Postmaster"):
                self.assertReply(c.cmd("RCPT TO:<%s>" % rc), 250, "2.1.5", rc)

    def test_too_many_recipients(self):
        users = [self.tern.fresh_user() for _ in range(7)]
        tok = harness.token("maxrcpt")
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            for u in users[:5]:
                self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (u, DOMAIN)), 250, "2.1.5")
            for u in users[5:]:
                self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (u, DOMAIN)), 452, "4.5.3")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(harness.dot_stuff(harness.simple_body(tok)) + b".\r\n")
            self.assertReply(c.read_reply(), 250, "2.0.0")
        for u in users[:5]:
            self.tern.wait_for_token(tok, u)
        for u in users[5:]:
            self.assertNoMail(u)


class LineLength(TernTestCase):

    def test_command_line_limit_boundary(self):
        with self.tern.session() as c:
            # RFC 5321 4.5.3.1.4: 512 octets including CRLF is allowed...
            line = "NOOP " + "x" * (512 - 2 - 5)
            self.assertEqual(len(line) + 2, 512)
            self.assertReply(c.cmd(line), 250, "2.0.0")
            # ...513 is not; the session continues.
            self.assertReply(c.cmd(line + "y"), 500, "5.5.2")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_long_command_lines(self):
        with self.tern.session() as c:
            for n in (600, 5000, 100000):
                self.assertReply(c.cmd("NOOP " + "z" * n), 500, "5.5.2", "line of %d" % n)
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0", "after line of %d" % n)
            # MAIL and RCPT may allow longer lines for their parameters (RFC 5321
            # 4.5.3.1.4 lets extensions raise the limit); a 600-octet local part is
            # then refused as an address (4.5.3.1.1: 64 octets at most).
            r = c.cmd("MAIL FROM:<%s@client.test>" % ("a" * 600))
            self.assertIn((r.code, r.enh), ((500, "5.5.2"), (501, "5.1.7"), (553, "5.1.7")), r)
            self.assertReply(c.cmd("MAIL FROM:<%s@client.test>" % ("a" * 5000)), 500, "5.5.2")
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")

    def test_long_line_transaction_survives(self):
        # An over-long command inside a transaction must not break the transaction.
        tok = harness.token("longcmd")
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
            r = c.cmd("RCPT TO:<%s@%s>" % ("b" * 700, DOMAIN))
            self.assertIn((r.code, r.enh), ((500, "5.5.2"), (501, "5.1.3"), (553, "5.1.3")), r)
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % ("b" * 5000, DOMAIN)), 500, "5.5.2")
            self.assertReply(c.cmd("RCPT TO:<dave@%s>" % DOMAIN), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(harness.dot_stuff(harness.simple_body(tok)) + b".\r\n")
            self.assertReply(c.read_reply(), 250, "2.0.0")
        self.tern.wait_for_token(tok, "dave")
