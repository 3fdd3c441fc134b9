"""
test_dns.py - MX resolution (issue 3, part 1) through `tern route`, against
a real DNS server: dnsmasq on 127.0.0.1 at a free port, serving the zone
below from its command line, with `resolver` pointing tern at it.

Covered: MX sorted by preference; equal preferences randomised (both
orders over 20 runs); implicit MX (no MX, A/AAAA of the domain); a name
with neither MX nor address; null MX (RFC 7505: permanent, no address
lookups); NXDOMAIN (dnsmasq's --local=/test/ answers it for unknown names);
an MX host behind a CNAME; IPv6/IPv4 interleaving of a multihomed host; an
MX on loopback (a loop unless allow_loopback_mx yes), on this machine's own
interface address, or named like our hostname (RFC 5321 5.1 cut); a local
domain; address literals; SERVFAIL (a small UDP responder in this process)
and a resolver that never answers, both temporary (exit 75).

Only loopback is used; dnsmasq is stopped by PID. Skips cleanly when
dnsmasq is not installed.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TernTestCase  # noqa: E402
from netfixtures import DNSMASQ, Dnsmasq, ServfailDNS  # noqa: E402

HOSTNAME = "mx.self.test"
EX_TEMPFAIL = 75


def own_interface_address():
    """A non-loopback IPv4 address of this machine, or None."""
    try:
        out = subprocess.run(["ip", "-j", "-4", "addr", "show"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10).stdout
        for link in json.loads(out.decode() or "[]"):
            for a in link.get("addr_info", []):
                ip = a.get("local", "")
                if ip and not ip.startswith("127."):
                    return ip
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return None


def zone_args(own_ip):
    z = [
        # two MX, different preferences; mx1 multihomed (2 AAAA, 2 A)
        "--mx-host=two.test,mx2.two.test,20",
        "--mx-host=two.test,mx1.two.test,10",
        "--host-record=mx1.two.test,203.0.113.1,2001:db8::1",
        "--host-record=mx1.two.test,203.0.113.2,2001:db8::2",
        "--host-record=mx2.two.test,203.0.113.3",
        # two MX of equal preference
        "--mx-host=eq.test,a.eq.test,10",
        "--mx-host=eq.test,b.eq.test,10",
        "--host-record=a.eq.test,203.0.113.11",
        "--host-record=b.eq.test,203.0.113.12",
        # no MX, but addresses: implicit MX
        "--host-record=implicit.test,203.0.113.21,2001:db8::21",
        # no MX and no address (only a TXT record)
        "--txt-record=txtonly.test,hello",
        # null MX
        "--mx-host=nullmx.test,.,0",
        # MX host behind a CNAME
        "--mx-host=cname.test,alias.cname.test,5",
        "--cname=alias.cname.test,real.cname.test",
        "--host-record=real.cname.test,203.0.113.31",
        # MX hosts without any address, and one of two missing
        "--mx-host=dead.test,gone.dead.test,10",
        "--mx-host=halfdead.test,gone.halfdead.test,10",
        "--mx-host=halfdead.test,ok.halfdead.test,20",
        "--host-record=ok.halfdead.test,203.0.113.41",
        # loopback MX
        "--mx-host=loop.test,lo.loop.test,10",
        "--host-record=lo.loop.test,127.0.0.2",
        # an MX named like tern's hostname, with a better MX before it
        "--mx-host=selfname.test,%s,10" % HOSTNAME,
        "--mx-host=selfname.test,backup.selfname.test,20",
        "--host-record=backup.selfname.test,203.0.113.51",
        "--mx-host=better.test,%s,10" % HOSTNAME,
        "--mx-host=better.test,best.better.test,5",
        "--host-record=best.better.test,203.0.113.52",
        "--host-record=%s,203.0.113.53" % HOSTNAME,
    ]
    if own_ip:
        z += ["--mx-host=own.test,me.own.test,10", "--host-record=me.own.test,%s" % own_ip]
    return z


class DnsRoute(TernTestCase):
    NEEDS_TERN = False
    dnsmasq = None
    workdir = None
    own_ip = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls._skip_reason:
            return
        if not (os.path.isfile(DNSMASQ) and os.access(DNSMASQ, os.X_OK)):
            cls._skip_reason = "dnsmasq not installed (Debian package dnsmasq-base)"
            return
        cls.workdir = tempfile.mkdtemp(prefix="tern-dns-", dir="/tmp")
        os.chmod(cls.workdir, 0o755)
        cls.own_ip = own_interface_address()
        cls.dnsmasq = Dnsmasq(zone_args(cls.own_ip), cls.workdir)
        try:
            cls.dnsmasq.start()
        except Exception as e:
            cls._setup_error = str(e)
            cls.dnsmasq = None

    @classmethod
    def tearDownClass(cls):
        if cls.dnsmasq is not None:
            cls.dnsmasq.stop()
            cls.dnsmasq = None
        if cls.workdir:
            shutil.rmtree(cls.workdir, ignore_errors=True)
        super().tearDownClass()

    # ------------------------------------------------------------------

    def config(self, resolver=None, extra=""):
        if resolver is None:
            resolver = "127.0.0.1:%d" % self.dnsmasq.port
        path = os.path.join(self.workdir, "tern-%s.conf" % harness.token("c"))
        with open(path, "w") as f:
            f.write("hostname %s\nresolver %s\nspool %s/spool\n%s\n"
                    "domain local.test {\n    mailbox postmaster\n}\n"
                    % (HOSTNAME, resolver, self.workdir, extra))
        return path

    def route(self, address, conf=None, json_out=True, timeout=120):
        args = [harness.tern_bin(), "route", address, "-c", conf or self.config()]
        if json_out:
            args.append("--json")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        p = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        for pat in harness.SANITIZER_PATTERNS:
            self.assertNotIn(pat, err, err)
        if json_out:
            try:
                return p.returncode, json.loads(out), err
            except ValueError:
                self.fail("not JSON (rc %d): %r\nstderr: %s" % (p.returncode, out, err))
        return p.returncode, out, err

    def hosts(self, r):
        return [(h["name"], h["pref"], h["status"], h["addresses"]) for h in r["hosts"]]

    # ------------------------------------------------------------------

    def test_preference_order_and_address_order(self):
        rc, r, err = self.route("alice@two.test")
        self.assertEqual(rc, 0, (r, err))
        self.assertEqual(r["status"], "ok")
        self.assertEqual(r["route"], "mx")
        self.assertFalse(r["implicit"])
        hosts = self.hosts(r)
        self.assertEqual([(h[0], h[1], h[2]) for h in hosts],
                         [("mx1.two.test", 10, "ok"), ("mx2.two.test", 20, "ok")])
        # IPv6 and IPv4 interleaved, IPv6 first; each family in DNS order
        # (dnsmasq may rotate records of a family, so compare as sets).
        a = hosts[0][3]
        self.assertEqual(len(a), 4)
        self.assertEqual(set(a[0::2]), {"2001:db8::1", "2001:db8::2"})
        self.assertEqual(set(a[1::2]), {"203.0.113.1", "203.0.113.2"})
        self.assertEqual(hosts[1][3], ["203.0.113.3"])

    def test_text_output(self):
        rc, out, err = self.route("alice@two.test", json_out=False)
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertIn("remote domain two.test", lines[0])
        mx_lines = [l.strip() for l in lines if l.strip().startswith("MX ")]
        self.assertEqual(mx_lines, ["MX 10 mx1.two.test", "MX 20 mx2.two.test"])
        self.assertIn("    203.0.113.3", lines)
        self.assertTrue(lines[-1].startswith("ok:"), out)

    def test_equal_preference_is_randomised(self):
        firsts = set()
        for _ in range(20):
            rc, r, err = self.route("bob@eq.test")
            self.assertEqual(rc, 0, err)
            names = [h["name"] for h in r["hosts"]]
            self.assertEqual(sorted(names), ["a.eq.test", "b.eq.test"])
            self.assertTrue(all(h["pref"] == 10 for h in r["hosts"]))
            firsts.add(names[0])
            if len(firsts) == 2:
                break
        self.assertEqual(firsts, {"a.eq.test", "b.eq.test"},
                         "equal-preference MX never reordered in 20 runs")

    def test_implicit_mx(self):
        rc, r, err = self.route("carol@implicit.test")
        self.assertEqual(rc, 0, err)
        self.assertTrue(r["implicit"])
        self.assertEqual(self.hosts(r), [("implicit.test", 0, "ok", ["2001:db8::21", "203.0.113.21"])])

    def test_no_mx_no_address_is_permanent(self):
        rc, r, err = self.route("dave@txtonly.test")
        self.assertEqual(rc, 1, (r, err))
        self.assertEqual(r["status"], "no-address")

    def test_null_mx(self):
        rc, r, err = self.route("erin@nullmx.test")
        self.assertEqual(rc, 1, (r, err))
        self.assertEqual(r["status"], "null-mx")
        self.assertEqual(r["hosts"], [])
        self.assertIn("null MX", r["reason"])

    def test_nxdomain(self):
        rc, r, err = self.route("frank@does-not-exist.test")
        self.assertEqual(rc, 1, (r, err))
        self.assertEqual(r["status"], "nxdomain")
        rc, out, err = self.route("frank@does-not-exist.test", json_out=False)
        self.assertEqual(rc, 1)
        self.assertIn("NXDOMAIN", out)

    def test_cname_mx_host(self):
        rc, r, err = self.route("u@cname.test")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.hosts(r), [("alias.cname.test", 5, "ok", ["203.0.113.31"])])

    def test_mx_hosts_without_address(self):
        rc, r, err = self.route("u@dead.test")
        self.assertEqual(rc, 1, (r, err))
        self.assertEqual(r["status"], "no-address")
        self.assertEqual(self.hosts(r), [("gone.dead.test", 10, "no-address", [])])
        rc, r, err = self.route("u@halfdead.test")
        self.assertEqual(rc, 0, err)
        self.assertEqual([(h[0], h[2]) for h in self.hosts(r)],
                         [("gone.halfdead.test", "no-address"), ("ok.halfdead.test", "ok")])

    def test_loopback_mx_is_a_loop_unless_allowed(self):
        rc, r, err = self.route("u@loop.test")
        self.assertEqual(rc, 1, (r, err))
        self.assertEqual(r["status"], "loop")
        self.assertEqual(self.hosts(r), [("lo.loop.test", 10, "self", ["127.0.0.2"])])
        rc, r, err = self.route("u@loop.test", conf=self.config(extra="allow_loopback_mx yes"))
        self.assertEqual(rc, 0, (r, err))
        self.assertEqual(self.hosts(r), [("lo.loop.test", 10, "ok", ["127.0.0.2"])])

    def test_own_interface_address_is_self(self):
        if not self.own_ip:
            self.skipTest("no non-loopback IPv4 address on this machine")
        rc, r, err = self.route("u@own.test", conf=self.config(extra="allow_loopback_mx yes"))
        self.assertEqual(rc, 1, (r, err))
        self.assertEqual(r["status"], "loop")

    def test_hostname_mx_cuts_equal_and_worse(self):
        # RFC 5321 5.1: our own name at 10 discards it and the backup at 20.
        rc, r, err = self.route("u@selfname.test")
        self.assertEqual(rc, 1, (r, err))
        self.assertEqual(r["status"], "loop")
        self.assertEqual([(h[0], h[2]) for h in self.hosts(r)],
                         [(HOSTNAME, "self"), ("backup.selfname.test", "skipped")])
        # A better MX than ourselves stays usable.
        rc, r, err = self.route("u@better.test")
        self.assertEqual(rc, 0, (r, err))
        self.assertEqual([(h[0], h[2]) for h in self.hosts(r)],
                         [("best.better.test", "ok"), (HOSTNAME, "self")])

    def test_local_domain_needs_no_dns(self):
        rc, r, err = self.route("postmaster@local.test", conf=self.config(resolver="127.0.0.1:1"))
        self.assertEqual(rc, 0, err)
        self.assertEqual(r["route"], "local")

    def test_address_literal(self):
        rc, r, err = self.route("u@[203.0.113.9]", conf=self.config(resolver="127.0.0.1:1"))
        self.assertEqual(rc, 0, err)
        self.assertTrue(r["literal"])
        self.assertEqual(self.hosts(r), [("[203.0.113.9]", 0, "ok", ["203.0.113.9"])])

    def test_bad_address(self):
        rc, r, err = self.route("not an address")
        self.assertEqual(rc, 1)
        self.assertEqual(r["status"], "bad-address")

    def test_servfail_is_temporary(self):
        resp = ServfailDNS()
        try:
            rc, r, err = self.route("u@two.test", conf=self.config(resolver="127.0.0.1:%d" % resp.port))
        finally:
            resp.stop()
        self.assertEqual(rc, EX_TEMPFAIL, (r, err))
        self.assertEqual(r["status"], "tempfail")
        self.assertGreater(resp.queries, 0)

    def test_silent_resolver_is_temporary(self):
        # A bound socket that never answers: libunbound gives up (or our
        # per-lookup timeout fires); either way the result is temporary.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        try:
            rc, r, err = self.route("u@two.test", conf=self.config(resolver="127.0.0.1:%d" % s.getsockname()[1]))
        finally:
            s.close()
        self.assertEqual(rc, EX_TEMPFAIL, (r, err))
        self.assertEqual(r["status"], "tempfail")


if __name__ == "__main__":
    unittest.main()
