"""
test_outbound_tls.py - STARTTLS on outbound delivery (issue 3, RFC 3207):
tern's relay against receiving servers on loopback that offer STARTTLS
with certificates from a private test CA (tlsfixtures.py), with
self-signed ones, with a TLS stack that cannot complete a handshake, and
without STARTTLS at all.

  relay_tls may (the default)   STARTTLS when offered; the receiver sees
                                the message over TLS 1.2 or newer; the
                                attempt is logged with the TLS version and
                                cipher and whether the certificate verified;
                                a self-signed certificate still encrypts;
                                a failed handshake falls back to clear text
                                on a fresh connection, and the message is
                                delivered exactly once
  route require_tls yes         a server without STARTTLS never receives
                                the message (nothing in clear text): it is
                                deferred with 4.7.10
  route require_tls verify      a self-signed certificate is refused
                                (deferred, nothing sent); a certificate from
                                the CA in tls_ca_file that names the MX host
                                is accepted
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tlsfixtures  # noqa: E402
from test_outbound import OutboundCase, HOSTS  # noqa: E402

TLS_HOSTS = {"tgood": 40, "tself": 41, "tbroken": 42, "tnone": 43, "vself": 44, "vgood": 45,
             "vwrong": 46, "shared": 47, "iplit": 48}
HOSTS.update(TLS_HOSTS)


class OutboundTls(OutboundCase):
    PROBE = "tgood.test"
    pki = None

    @classmethod
    def zone(cls, block):
        z = []
        for name, n in TLS_HOSTS.items():
            z.append("--mx-host=%s.test,mx.%s.test,10" % (name, name))
            z.append("--host-record=mx.%s.test,%s" % (name, block.ip(n)))
        # two domains whose MX hosts share one address (connection reuse)
        z.append("--mx-host=reuse-b.test,mx.reuse-b.test,10")
        z.append("--host-record=mx.reuse-b.test,%s" % block.ip(TLS_HOSTS["shared"]))
        return z

    @classmethod
    def prepare(cls):
        reason = tlsfixtures.openssl_missing_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.pki = tlsfixtures.Pki(cls.workdir)
        return {"tls_ca_file": cls.pki.ca_cert}

    @classmethod
    def extra_config(cls):
        return ("route tnone.test {\n    require_tls yes\n}\n"
                "route vself.test {\n    require_tls verify\n}\n"
                "route vgood.test {\n    require_tls verify\n}\n"
                "route vwrong.test {\n    require_tls verify\n}\n"
                "route reuse-b.test {\n    require_tls verify\n}\n"
                "route iplit.test {\n    smarthost [%s]:25\n    require_tls verify\n}\n"
                % cls.block.ip(TLS_HOSTS["iplit"]))

    def tls_receiver(self, host, self_signed=False, broken=False, name=None, ips=None):
        name = name or "mx.%s.test" % host
        if self_signed:
            cert, key = self.pki.self_signed(name)
        else:
            cert, key = self.pki.issue(name, ips=ips)
        return self.receiver(host, tls={"cert": cert, "key": key, "broken": broken})

    def assert_tls(self, tx, what):
        self.assertIsNotNone(tx.tls, "%s: the message went in clear text" % what)
        self.assertRegex(tx.tls, r"^TLSv1\.[23]:", what)

    def test_opportunistic_verified(self):
        rcv = self.tls_receiver("tgood")
        sub = self.submit(["u@tgood.test"])
        tx = self.only_one(rcv, sub.tok, what="STARTTLS")
        self.assert_tls(tx, "STARTTLS offered")
        self.assert_relayed(tx, sub, ["u@tgood.test"], "over TLS")
        # RFC 3207 4.2: EHLO again after the handshake
        verbs = [c["verb"] for c in rcv.commands()]
        self.assertGreaterEqual(verbs.count("EHLO"), 2, verbs)
        lines = self.wait_log([sub.qid, "tls=TLSv1."], what="TLS on the attempt line")
        self.assertTrue(any(rcv.ip in l and "u@tgood.test" in l for l in lines), lines)
        self.wait_log(["event=tls", rcv.ip, "cert=verified"], what="verified certificate")

    def test_opportunistic_self_signed(self):
        rcv = self.tls_receiver("tself", self_signed=True)
        sub = self.submit(["u@tself.test"])
        tx = self.only_one(rcv, sub.tok, what="self-signed")
        self.assert_tls(tx, "self-signed, level may")
        self.wait_log(["event=tls", rcv.ip, "cert=untrusted"], what="untrusted certificate")

    def test_broken_handshake_falls_back(self):
        rcv = self.tls_receiver("tbroken", broken=True)
        sub = self.submit(["u@tbroken.test"])
        tx = self.only_one(rcv, sub.tok, what="broken TLS")
        self.assertIsNone(tx.tls, "the handshake cannot succeed, yet tx.tls=%r" % tx.tls)
        self.wait_log(["event=tls-failed", rcv.ip, "level=may"], what="failed handshake logged")
        # the plain retry went straight on: no STARTTLS on the connection
        # that carried the message
        self.assertGreaterEqual(rcv.connection_count(), 2)
        verbs = [c["verb"] for c in rcv.commands() if c["conn"] == tx.conn]
        self.assertIn("MAIL", verbs)
        self.assertNotIn("STARTTLS", verbs, "the fallback connection tried TLS again")

    def test_require_tls_without_starttls(self):
        rcv = self.receiver("tnone")          # no STARTTLS offered
        sub = self.submit(["u@tnone.test"])
        lines = self.wait_log([sub.qid, "4.7.10"], what="deferred for TLS")
        self.assertTrue(any("state=deferred" in l or "deferred" in l for l in lines), lines)
        # the attempt is over: the receiver recorded every command before
        # it replied, so a MAIL of that attempt would be there already
        self.assertEqual(rcv.transactions(sub.tok), [], "sent in clear text on a require_tls route")
        verbs = [c["verb"] for c in rcv.commands()]
        self.assertNotIn("MAIL", verbs, "MAIL in clear text on a require_tls route")

    def test_require_verify_refuses_self_signed(self):
        rcv = self.tls_receiver("vself", self_signed=True)
        sub = self.submit(["u@vself.test"])
        self.wait_log([sub.qid, "certificate verification failed"], what="verify refused")
        self.wait_log(["queue id=%s event=deferred" % sub.qid], what="verify refused: the attempt is over")
        self.assertEqual(rcv.transactions(sub.tok), [])
        self.assertNotIn("MAIL", [c["verb"] for c in rcv.commands()])

    def test_require_verify_accepts_ca_certificate(self):
        rcv = self.tls_receiver("vgood")
        sub = self.submit(["u@vgood.test"])
        tx = self.only_one(rcv, sub.tok, what="verify with the CA")
        self.assert_tls(tx, "require_tls verify")

    def test_require_verify_refuses_name_mismatch(self):
        """A certificate from the trusted CA, but for another host (RFC
        6125 6.4): refused."""
        rcv = self.tls_receiver("vwrong", name="mx.elsewhere.test")
        sub = self.submit(["u@vwrong.test"])
        self.wait_log([sub.qid, "certificate verification failed"], what="name mismatch refused")
        self.wait_log(["queue id=%s event=deferred" % sub.qid], what="name mismatch refused: the attempt is over")
        self.assertEqual(rcv.transactions(sub.tok), [])
        self.assertNotIn("MAIL", [c["verb"] for c in rcv.commands()])

    def test_verify_never_rides_a_cached_connection(self):
        """A connection whose certificate was checked for mx.shared.test
        (or not at all) must not carry mail for a verify route whose MX is
        another name at the same address."""
        rcv = self.tls_receiver("shared")          # certificate: mx.shared.test
        first = self.submit(["u@shared.test"])     # level may: delivered, connection cached
        self.only_one(rcv, first.tok, what="first message")
        sub = self.submit(["u@reuse-b.test"])      # verify, MX mx.reuse-b.test
        self.wait_log([sub.qid, "certificate verification failed"], what="verified per name")
        self.wait_log(["queue id=%s event=deferred" % sub.qid], what="verified per name: the attempt is over")
        self.assertEqual(rcv.transactions(sub.tok), [], "verify-route mail sent over a "
                         "connection verified for another name")

    def test_require_verify_ip_literal_smarthost(self):
        """A smarthost given as [address]: its certificate must name that
        address (an IP SAN); no SNI is sent for an address."""
        ip = self.block.ip(TLS_HOSTS["iplit"])
        rcv = self.tls_receiver("iplit", name="smarthost.iplit.test", ips=[ip])
        sub = self.submit(["u@iplit.test"])
        tx = self.only_one(rcv, sub.tok, what="IP literal smarthost, verify")
        self.assert_tls(tx, "require_tls verify to [%s]" % ip)


if __name__ == "__main__":
    unittest.main()
