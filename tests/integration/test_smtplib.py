"""
test_smtplib.py - mail sent with Python's smtplib lands in Maildirs.

Plain send, several recipients, aliases (nested, user@domain targets),
<Postmaster> without a domain (RFC 5321 4.1.1.3), case-insensitive local
parts and domains, a second local domain, the null sender, SMTPUTF8,
sendmail() with more recipients than max_recipients (452 for the rest),
the stored headers (Return-Path, Delivered-To, Received first) and the log
lines a `grep QUEUEID` finds.
"""

import email
import email.policy
import os
import re
import smtplib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, DOMAIN2, HOSTNAME, TernTestCase  # noqa: E402


def make_msg(tok, to="alice@" + DOMAIN, subject=None):
    return ("From: Sender <sender@client.test>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@client.test>\r\n"
            "X-Tern-Test: %s\r\n\r\nHello from smtplib, %s.\r\n" % (to, subject or tok, tok, tok, tok))


class SmtplibBasics(TernTestCase):

    def test_send_one(self):
        tok = harness.token("one")
        with self.tern.smtp() as s:
            code, _ = s.ehlo()
            self.assertEqual(code, 250)
            for kw in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes", "dsn", "chunking"):
                self.assertTrue(s.has_extn(kw), kw)
            refused = s.sendmail("sender@client.test", ["alice@" + DOMAIN], make_msg(tok))
            self.assertEqual(refused, {})
        m = self.tern.wait_for_token(tok, "alice")
        self.assertIn(("Hello from smtplib, %s." % tok).encode(), m)

    def test_queue_id_reply(self):
        tok = harness.token("qid")
        with self.tern.smtp() as s:
            s.ehlo()
            self.assertEqual(s.mail("sender@client.test")[0], 250)
            self.assertEqual(s.rcpt("bob@" + DOMAIN)[0], 250)
            code, msg = s.data(make_msg(tok).encode())
            self.assertEqual(code, 250)
            self.assertTrue(re.match(rb"^2\.0\.0 Ok: queued as [0-9A-Fa-f]{16}$", msg), msg)
        self.tern.wait_for_token(tok, "bob")

    def test_multiple_recipients(self):
        tok = harness.token("multi")
        rcpts = ["alice@" + DOMAIN, "bob@" + DOMAIN, "carol@" + DOMAIN, "info@" + DOMAIN2]
        with self.tern.smtp() as s:
            self.assertEqual(s.sendmail("sender@client.test", rcpts, make_msg(tok)), {})
        for user in ("alice", "bob", "carol"):
            self.tern.wait_for_token(tok, user)
        self.tern.wait_for_token(tok, "info", DOMAIN2)

    def test_same_recipient_twice_gets_one_copy(self):
        u = self.tern.fresh_user()
        tok = harness.token("dup")
        with self.tern.smtp() as s:
            s.sendmail("sender@client.test", ["%s@%s" % (u, DOMAIN), "%s@%s" % (u.upper(), DOMAIN)], make_msg(tok))
        self.tern.wait_for_mail(u, 1, exact=True)

    def test_alias_expands(self):
        tok = harness.token("alias")
        with self.tern.smtp() as s:
            self.assertEqual(s.sendmail("sender@client.test", ["team@" + DOMAIN], make_msg(tok)), {})
        a = self.tern.wait_for_token(tok, "alice")
        self.tern.wait_for_token(tok, "bob")
        # Delivered-To names the mailbox (RFC 9228 practice) or the alias; it is there.
        self.assertRegex(a.decode("utf-8", "replace"), r"(?im)^Delivered-To:")
        self.assertFalse(os.path.exists(self.tern.maildir_path("team")), "an alias is not a mailbox")

    def test_nested_alias_and_domain_target(self):
        tok = harness.token("nested")
        with self.tern.smtp() as s:
            self.assertEqual(s.sendmail("sender@client.test", ["everyone@" + DOMAIN], make_msg(tok)), {})
        for user in ("alice", "bob", "carol"):
            self.tern.wait_for_token(tok, user)
        tok2 = harness.token("aliasext")
        with self.tern.smtp() as s:
            self.assertEqual(s.sendmail("sender@client.test", ["alice-ext@" + DOMAIN], make_msg(tok2)), {})
        self.tern.wait_for_token(tok2, "alice")

    def test_alias_and_member_together_one_copy_each(self):
        # team expands to alice and bob; alice is also named herself. A
        # mailbox reached twice in one transaction gets one copy, as for
        # the same address twice (test_same_recipient_twice_gets_one_copy).
        tok = harness.token("aliasdup")
        with self.tern.smtp() as s:
            self.assertEqual(s.sendmail("sender@client.test", ["team@" + DOMAIN, "alice@" + DOMAIN],
                                        make_msg(tok)), {})
        self.tern.wait_for_token(tok, "bob")
        self.tern.wait_for_token(tok, "alice")
        self.tern.wait_settled(s.queue_ids)
        for box in ("alice", "bob"):
            n = sum(1 for m in self.tern.messages(box) if tok.encode() in m)
            self.assertEqual(n, 1, "%s got %d copies of one message" % (box, n))

    def test_postmaster_without_domain(self):
        tok = harness.token("pm")
        with self.tern.smtp() as s:
            s.ehlo()
            s.mail("sender@client.test")
            code, msg = s.rcpt("Postmaster")
            self.assertEqual(code, 250, msg)
            code, msg = s.data(make_msg(tok, to="Postmaster").encode())
            self.assertEqual(code, 250, msg)
        self.tern.wait_settled(s.queue_ids)
        where = self.tern.find_token_anywhere(tok)
        self.assertTrue(where, "mail to <Postmaster> never delivered")
        self.assertTrue(all(u == "postmaster" for _, u in where), where)

    def test_case_insensitive_local_part_and_domain(self):
        tok = harness.token("case")
        with self.tern.smtp() as s:
            self.assertEqual(s.sendmail("sender@client.test", ["ALICE@Example.TEST", "Carol@" + DOMAIN],
                                        make_msg(tok)), {})
        self.tern.wait_for_token(tok, "alice")
        self.tern.wait_for_token(tok, "carol")

    def test_second_domain(self):
        tok = harness.token("dom2")
        with self.tern.smtp() as s:
            s.sendmail("sender@client.test", ["info@" + DOMAIN2, "postmaster@" + DOMAIN2], make_msg(tok))
        self.tern.wait_for_token(tok, "info", DOMAIN2)
        self.tern.wait_for_token(tok, "postmaster", DOMAIN2)
        self.assertFalse(any(tok.encode() in m for m in self.tern.messages("postmaster", DOMAIN)))

    def test_unknown_recipient_refused(self):
        with self.tern.smtp() as s:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                s.sendmail("sender@client.test", ["nobody-here@" + DOMAIN], make_msg("x"))
            code, msg = cm.exception.recipients["nobody-here@" + DOMAIN]
            self.assertEqual(code, 550)
            self.assertTrue(msg.startswith(b"5.1.1"), msg)

    def test_null_sender(self):
        tok = harness.token("null")
        with self.tern.smtp() as s:
            s.sendmail("<>", ["bob@" + DOMAIN], make_msg(tok))
        m = self.tern.wait_for_token(tok, "bob")
        self.assertRegex(m.decode(), r"(?im)^Return-Path: <>\s*$")

    def test_smtputf8(self):
        tok = harness.token("u8")
        msg = make_msg(tok, subject="Ünïcödé") .encode("utf-8")
        with self.tern.smtp() as s:
            s.sendmail("jörg@client.test", ["alice@" + DOMAIN], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        m = self.tern.wait_for_token(tok, "alice")
        self.assertIn("Ünïcödé".encode(), m)

    def test_sendmail_too_many_recipients(self):
        users = [self.tern.fresh_user() for _ in range(8)]
        tok = harness.token("limit")
        with self.tern.smtp() as s:
            refused = s.sendmail("sender@client.test", ["%s@%s" % (u, DOMAIN) for u in users], make_msg(tok))
        self.assertEqual(sorted(refused), sorted("%s@%s" % (u, DOMAIN) for u in users[5:]))
        for code, msg in refused.values():
            self.assertEqual(code, 452)
            self.assertTrue(msg.startswith(b"4.5.3"), msg)
        for u in users[:5]:
            self.tern.wait_for_token(tok, u)
        for u in users[5:]:
            self.assertNoMail(u)

    def test_helo_then_send(self):
        tok = harness.token("helo")
        with self.tern.smtp() as s:
            code, msg = s.helo("client.test")
            self.assertEqual(code, 250)
            self.assertTrue(msg.decode().startswith(HOSTNAME), msg)
            s.sendmail("sender@client.test", ["dave@" + DOMAIN], make_msg(tok))
        self.tern.wait_for_token(tok, "dave")

    def test_several_messages_one_session(self):
        toks = [harness.token("sess%d" % i) for i in range(5)]
        with self.tern.smtp() as s:
            for t in toks:
                s.sendmail("sender@client.test", ["erin@" + DOMAIN], make_msg(t))
                s.rset()
        for t in toks:
            self.tern.wait_for_token(t, "erin")

    def test_stored_headers(self):
        tok = harness.token("hdr")
        with self.tern.smtp() as s:
            s.sendmail("sender@client.test", ["frank@" + DOMAIN], make_msg(tok, to="frank@" + DOMAIN))
        raw = self.tern.wait_for_token(tok, "frank")
        self.assertNotIn(b"\r\n", raw, "Maildir files use LF line endings")
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        self.assertEqual(msg["Return-Path"].strip(), "<sender@client.test>")
        self.assertIn("frank@" + DOMAIN, msg["Delivered-To"].lower())
        names = [k.lower() for k in msg.keys()]
        first_other = [n for n in names if n not in ("return-path", "delivered-to")][0]
        self.assertEqual(first_other, "received", names)
        self.assertEqual(names.count("received"), 1)
        received = " ".join(msg.get_all("Received")[0].split())
        self.assertIn("by " + HOSTNAME, received)
        self.assertIn("from ", received)
        self.assertIn(";", received)
        harness.parse_date(received.rsplit(";", 1)[1])   # RFC 5322 date-time

    def test_log_follows_queue_id(self):
        tok = harness.token("log")
        with self.tern.smtp() as s:
            s.ehlo()
            s.mail("sender@client.test")
            s.rcpt("alice@" + DOMAIN)
            code, msg = s.data(make_msg(tok).encode())
        qid = harness.queue_id(msg.decode())
        self.assertTrue(qid, msg)
        self.tern.wait_for_token(tok, "alice")
        self.tern.wait_settled([qid])
        lines = self.tern.log_lines(qid)
        self.assertGreaterEqual(len(lines), 2, lines)
        self.assertTrue([l for l in lines if "alice" in l], lines)
        for l in lines:
            self.assertRegex(l, r"\b[a-z_]+=\S", "key=value log line: %r" % l)
