"""
test_routes.py - per-domain routes (issue 3, "Routing") end to end: the real
tern binary relays through smarthosts that are aiosmtpd servers with AUTH on
127.0.0.40 (ports BASE, BASE+1, BASE+2; BASE is 2526, or 2536 when the other
build holds 2526: a lock file per port set).

The smarthost process (this file run as `python3 test_routes.py serve CONF`
by /usr/bin/python3, stopped by PID) runs three servers:
  BASE      AUTH PLAIN and LOGIN; user "tern", password "s3cret pw"
  BASE+1    AUTH LOGIN only, same credentials
  BASE+2    no AUTH at all
and appends one JSON line per AUTH attempt and per accepted message.

Covered:
  - `route *` with `smarthost [127.0.0.40]:BASE` and AUTH: mail for a
    foreign domain arrives at the smarthost, authenticated with PLAIN as
    "tern", content intact; no DNS is involved (the resolver is a dead
    port), and the loopback smarthost is not taken for a mail loop;
  - a route whose smarthost offers only LOGIN: LOGIN is used;
  - a wrong password: 535 from the smarthost, the recipient is deferred
    (state=deferred) with the server's text, never failed;
  - a smarthost without AUTH PLAIN/LOGIN: deferred, 4.7.0;
  - a route with a smarthost but no credentials: delivered without AUTH
    (credentials belong to their own route only);
  - `require_tls yes` to a smarthost without STARTTLS: deferred with
    "4.7.10 TLS required, but the server does not offer STARTTLS", and the
    smarthost never sees the message;
  - AUTH without `auth_plaintext yes` to a smarthost without STARTTLS:
    deferred, and no AUTH is ever sent (the password stays here);
  - `tern route` prints the route, smarthost, AUTH and TLS requirement and
    the addresses (text and JSON), and picks the most specific block.
Skips without python3-aiosmtpd for /usr/bin/python3.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from netfixtures import lock_first, spawn, stop_popen, wait_for  # noqa: E402

PY = "/usr/bin/python3"
SMARTHOST_IP = "127.0.0.40"
USER = "tern"
PASSWORD = "s3cret pw"


def aiosmtpd_missing_reason():
    r = subprocess.run([PY, "-c", "import aiosmtpd.controller, aiosmtpd.smtp"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return None if r.returncode == 0 else "python3-aiosmtpd not installed for %s" % PY


def hold_ports():
    """(fd, base port) for a locked set of three ports on SMARTHOST_IP."""
    # Ten sets, so several suites running at once (both builds, other
    # checkouts on the same machine) never run out and skip.
    return lock_first(range(2526, 2626, 10),
                      lambda base: "/tmp/tern-test-routes-%s-%d.lock" % (SMARTHOST_IP, base))


# --------------------------------------------------------------------------
# the smarthost (its own process)

def serve(conf_path):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    with open(conf_path) as f:
        conf = json.load(f)
    out = open(conf["events"], "a", buffering=1)

    def emit(**kw):
        out.write(json.dumps(kw) + "\n")

    def make_auth(port):
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword) and
                  auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode())
            emit(ev="auth", port=port, mechanism=mechanism,
                 login=auth_data.login.decode("utf-8", "replace")
                 if isinstance(auth_data, LoginPassword) else None, ok=ok)
            return AuthResult(success=ok, handled=False)
        return authenticator

    class Handler:
        def __init__(self, port):
            self.port = port

        async def handle_DATA(self, server, session, envelope):
            emit(ev="message", port=self.port, mail_from=envelope.mail_from,
                 rcpt_tos=envelope.rcpt_tos, authenticated=bool(session.authenticated),
                 content=envelope.content.decode("utf-8", "replace"))
            return "250 2.0.0 Ok: stored"

    base = conf["base"]
    servers = [
        (base, []),                         # PLAIN and LOGIN
        (base + 1, ["PLAIN"]),              # LOGIN only
        (base + 2, ["PLAIN", "LOGIN"]),     # no AUTH
    ]
    ctls = []
    for port, exclude in servers:
        c = Controller(Handler(port), hostname=SMARTHOST_IP, port=port,
                       authenticator=make_auth(port), auth_require_tls=False,
                       auth_exclude_mechanism=exclude, ready_timeout=60)
        c.start()
        ctls.append(c)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    emit(ev="ready")
    while not stop:
        time.sleep(0.1)
    for c in ctls:
        c.stop()


# --------------------------------------------------------------------------
# the tests

@unittest.skipIf(aiosmtpd_missing_reason(), aiosmtpd_missing_reason() or "")
class Routes(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        reason = harness.binary_missing_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.tern = cls.server = None
        cls.lockfd, cls.base = hold_ports()
        if cls.lockfd is None:
            raise unittest.SkipTest("no free port set on %s" % SMARTHOST_IP)
        try:
            cls.tern = harness.Tern(options={
                # No DNS may be needed: every smarthost here is an address.
                "resolver": "127.0.0.1:1",
            })
            d = cls.tern.dir
            cls.events = os.path.join(d, "smarthost-events.jsonl")
            conf = os.path.join(d, "smarthost.json")
            with open(conf, "w") as f:
                json.dump({"events": cls.events, "base": cls.base}, f)
            for name, pw in (("pw", PASSWORD), ("badpw", "wrong")):
                p = os.path.join(d, name)
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(fd, (pw + "\n").encode())
                os.close(fd)
            sh = "[%s]:%%d" % SMARTHOST_IP
            cls.tern.extra_config = "\n".join([
                "route * {",
                "    smarthost %s" % (sh % cls.base),
                "    auth_user %s" % USER,
                "    auth_password_file %s/pw" % d,
                "    auth_plaintext yes",
                "}",
                "route .login.test {",
                "    smarthost %s" % (sh % (cls.base + 1)),
                "    auth_user %s" % USER,
                "    auth_password_file %s/pw" % d,
                "    auth_plaintext yes",
                "}",
                "route badpw.test {",
                "    smarthost %s" % (sh % cls.base),
                "    auth_user %s" % USER,
                "    auth_password_file %s/badpw" % d,
                "    auth_plaintext yes",
                "}",
                "route nomech.test {",
                "    smarthost %s" % (sh % (cls.base + 2)),
                "    auth_user %s" % USER,
                "    auth_password_file %s/pw" % d,
                "    auth_plaintext yes",
                "}",
                "route cleartext.test {",
                "    smarthost %s" % (sh % cls.base),
                "    auth_user %s" % USER,
                "    auth_password_file %s/pw" % d,
                "}",
                "route noauth.test { smarthost %s }" % (sh % (cls.base + 2)),
                "route tls.test {",
                "    smarthost %s" % (sh % cls.base),
                "    auth_user %s" % USER,
                "    auth_password_file %s/pw" % d,
                "    require_tls yes",
                "}",
            ])
            cls.tern.write_config()
            cls.server = spawn([PY, os.path.abspath(__file__), "serve", conf],
                               os.path.join(d, "smarthost.err"), "smarthost")
            if not wait_for(lambda: any(e["ev"] == "ready" for e in cls.read_events())):
                with open(os.path.join(d, "smarthost.err"), errors="replace") as f:
                    raise AssertionError("smarthost not ready:\n" + f.read())
            cls.tern.start()
            if not wait_for(lambda: "relay event=ready" in cls.log()):
                raise AssertionError("no relay event=ready in the log:\n" + cls.log())
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        report = None
        if cls.tern is not None:
            cls.tern.stop()
            report = cls.tern.sanitizer_report()
        stop_popen(cls.server)
        cls.server = None
        if cls.tern is not None:
            cls.tern.cleanup()
            cls.tern = None
        if cls.lockfd is not None:
            os.close(cls.lockfd)
            cls.lockfd = None
        if report:
            raise AssertionError("sanitizer report in tern stderr:\n%s" % report)

    @classmethod
    def log(cls):
        try:
            with open(cls.tern.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    @classmethod
    def read_events(cls):
        try:
            with open(cls.events) as f:
                return [json.loads(l) for l in f if l.strip()]
        except (OSError, ValueError):
            return []

    def submit(self, rcpt, tok):
        body = ("Subject: %s\r\n\r\nrouted\r\n.dot line\r\n" % tok).encode()
        with harness.SMTPClient(self.tern.port) as c:
            c.start()
            r = c.send_message("sender@client.test", [rcpt], body)
            qid = harness.queue_id(r.text)
            c.cmd("QUIT", check=False)
        self.assertTrue(qid, "no queue id in %r" % r)
        return qid

    def result_line(self, qid, rcpt, state):
        pat = r"relay id=%s rcpt=%s .*state=%s" % (qid, re.escape(rcpt), state)
        m = wait_for(lambda: re.search(pat + r".*", self.log()))
        self.assertTrue(m, "no %s line for %s; log:\n%s" % (state, rcpt, self.log()[-4000:]))
        return m.group(0).replace("\\x20", " ")   # log_quote() escapes blanks

    def message(self, tok):
        return wait_for(lambda: next((e for e in self.read_events()
                                      if e["ev"] == "message" and tok in e["content"]), None))

    def route(self, address, json_out=False):
        args = [harness.tern_bin(), "route", address, "-c", self.tern.conf]
        if json_out:
            args.append("--json")
        p = subprocess.run(args, env=self.tern.env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        err = p.stderr.decode("utf-8", "replace")
        for pat in harness.SANITIZER_PATTERNS:
            self.assertNotIn(pat, err, err)
        out = p.stdout.decode("utf-8", "replace")
        return p.returncode, (json.loads(out) if json_out else out)

    # ------------------------------------------------------------------

    def test_smarthost_with_auth_plain(self):
        tok = harness.token()
        qid = self.submit("alice@foreign.test", tok)
        line = self.result_line(qid, "alice@foreign.test", "delivered")
        self.assertIn("mx=[%s] ip=%s" % (SMARTHOST_IP, SMARTHOST_IP), line)
        m = self.message(tok)
        self.assertIsNotNone(m, "smarthost got nothing")
        self.assertEqual(m["port"], self.base)
        self.assertTrue(m["authenticated"])
        self.assertEqual(m["rcpt_tos"], ["alice@foreign.test"])
        self.assertEqual(m["mail_from"], "sender@client.test")
        self.assertIn("Subject: %s\r\n\r\nrouted\r\n.dot line\r\n" % tok, m["content"])
        auths = [e for e in self.read_events() if e["ev"] == "auth" and e["port"] == self.base
                 and e["ok"]]
        self.assertTrue(auths and all(a["mechanism"] == "PLAIN" and a["login"] == USER
                                      for a in auths), auths)
        self.assertNotIn(PASSWORD, self.log())

    def test_login_only_smarthost(self):
        tok = harness.token()
        qid = self.submit("bob@mx.login.test", tok)
        self.result_line(qid, "bob@mx.login.test", "delivered")
        m = self.message(tok)
        self.assertEqual(m["port"], self.base + 1)
        self.assertTrue(m["authenticated"])
        auths = [e for e in self.read_events() if e["ev"] == "auth" and e["port"] == self.base + 1]
        self.assertTrue(auths and all(a["mechanism"] == "LOGIN" for a in auths), auths)

    def test_wrong_password_defers(self):
        # A rejected password is the administrator's to fix: the mail
        # waits (deferred) instead of failing, the server's text kept.
        tok = harness.token()
        qid = self.submit("carol@badpw.test", tok)
        line = self.result_line(qid, "carol@badpw.test", "deferred")
        self.assertRegex(line, r'reply="[^"]*Authentication[^"]*"')
        self.assertRegex(self.log(), r"client session=\S+ event=auth peer=\S+ mechanism=PLAIN "
                                     r"result=failed reply=\"535 ")
        self.assertFalse(any(e["ev"] == "message" and tok in e["content"]
                             for e in self.read_events()))
        self.assertNotIn("wrong", self.log())

    def test_no_mechanism_defers(self):
        tok = harness.token()
        qid = self.submit("dave@nomech.test", tok)
        line = self.result_line(qid, "dave@nomech.test", "deferred")
        self.assertIn("4.7.0 smarthost offers no AUTH PLAIN/LOGIN", line)

    def test_route_without_credentials_sends_none(self):
        tok = harness.token()
        qid = self.submit("erin@noauth.test", tok)
        self.result_line(qid, "erin@noauth.test", "delivered")
        m = self.message(tok)
        self.assertEqual(m["port"], self.base + 2)
        self.assertFalse(m["authenticated"])

    def test_no_password_in_clear_text(self):
        """Without auth_plaintext, AUTH waits for TLS (RFC 4954 4): this
        smarthost offers no STARTTLS, so no AUTH is ever sent."""
        tok = harness.token()
        n_before = len(self.read_events())
        qid = self.submit("gina@cleartext.test", tok)
        line = self.result_line(qid, "gina@cleartext.test", "deferred")
        self.assertIn("AUTH refused in clear text", line)
        # the smarthost writes each event before it replies, and tern logs
        # its result after the last reply: no wait needed
        new = self.read_events()[n_before:]
        self.assertFalse([e for e in new if e.get("ev") == "auth"], new)
        self.assertFalse(any(tok in e.get("content", "") for e in new))

    def test_require_tls_defers(self):
        tok = harness.token()
        n_before = len(self.read_events())
        qid = self.submit("frank@tls.test", tok)
        line = self.result_line(qid, "frank@tls.test", "deferred")
        self.assertIn("4.7.10 TLS required, but the server does not offer STARTTLS", line)
        self.assertFalse(any(tok in e.get("content", "") for e in self.read_events()[n_before:]))

    def test_tern_route_prints_the_route(self):
        rc, out = self.route("alice@foreign.test")
        self.assertEqual(rc, 0, out)
        lines = out.splitlines()
        self.assertIn("remote domain foreign.test, smarthost [%s]:%d" % (SMARTHOST_IP, self.base),
                      lines[0])
        self.assertIn("  route *", lines)
        self.assertIn("  smarthost %s port %d, IP address" % (SMARTHOST_IP, self.base), lines)
        self.assertIn("  auth required: yes (PLAIN or LOGIN, user %s)" % USER, lines)
        self.assertIn("  tls required: no (relay_tls level may)", lines)
        self.assertIn("    %s" % SMARTHOST_IP, lines)
        self.assertTrue(lines[-1].startswith("ok:"), out)
        self.assertNotIn(PASSWORD, out)

        rc, r = self.route("frank@tls.test", json_out=True)
        self.assertEqual(rc, 0, r)
        self.assertEqual((r["route"], r["route_block"], r["port"], r["mx_lookup"], r["auth"],
                          r["auth_user"], r["require_tls"]),
                         ("smarthost", "tls.test", self.base, False, True, USER, True))
        self.assertEqual(r["hosts"][0]["addresses"], [SMARTHOST_IP])
        # the longest .suffix wins over *, and "login.test" itself is not a subdomain
        rc, r = self.route("x@a.b.login.test", json_out=True)
        self.assertEqual((r["route_block"], r["port"]), (".login.test", self.base + 1))
        rc, r = self.route("x@login.test", json_out=True)
        self.assertEqual(r["route_block"], "*")
        # a local domain is never routed
        rc, r = self.route("postmaster@%s" % harness.DOMAIN, json_out=True)
        self.assertEqual((rc, r["route"]), (0, "local"))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        unittest.main()
