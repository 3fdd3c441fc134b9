"""
test_tls.py - server-side TLS: STARTTLS (RFC 3207) on the ordinary
listeners and implicit TLS (RFC 8314 section 3) on a listener of its own,
with certificates from a private test CA (tlsfixtures.py) issued for the
harness HOSTNAME (and 127.0.0.1). Clients: Python's ssl (raw sockets and
smtplib), `openssl s_client` and swaks.

  STARTTLS advertisement (RFC 3207 2, 4.2)
      EHLO lists STARTTLS when a certificate is configured and TLS is not
      active yet; never after the handshake; never on an implicit-TLS or a
      `tls none` listener; never without a certificate (STARTTLS is then
      502 5.5.1)
  the STARTTLS command (RFC 3207 4; RFC 5321 4.1.4, 4.2)
      220 2.0.0 Ready to start TLS; an argument is 501 5.5.4 (and the
      connection stays in clear text); inside a mail transaction 503 5.5.1
      (after RSET it works); with TLS already active 503 5.5.1; as the last
      command of a pipelined group (RFC 2920, RFC 3207 4) it works; QUIT
      over TLS is answered with 221 (RFC 5321 4.1.1.10)
  state reset after the handshake (RFC 3207 4.2)
      EHLO is needed again (MAIL before it is 503 5.5.1); the second EHLO
      lists the first one's extensions minus STARTTLS
  command injection (CVE-2011-0411; RFC 3207 4, 4.2, 6)
      whatever follows "STARTTLS\\r\\n" in the same write (MAIL, RSET) is
      discarded: no reply to it, before or after the handshake, and no
      transaction left open by it
  trace information (RFC 5321 4.4, RFC 3848, RFC 8314 4.3)
      a message received over TLS has "with ESMTPS" in tern's Received
      field and a comment naming the TLS version and the cipher the client
      saw; one received in clear text says "with ESMTP"
  the log
      an event=tls line with the version and cipher for the session; no
      event=tls-unavailable (the smtp process loaded the pair before it
      dropped privileges and chrooted)
  implicit TLS (RFC 8314 3, 3.3)
      no clear-text greeting (a TCP client that sends nothing gets nothing;
      clear-text SMTP gets no SMTP answer); the 220 arrives inside TLS; a
      whole transaction works and is delivered with ESMTPS; STARTTLS there
      is 503 5.5.1; after QUIT the server sends a TLS close_notify before
      closing TCP (RFC 8314 3.4, a SHOULD); one timeout_greeting bounds
      the handshake and the EHLO together (a slow handshake leaves less
      for the EHLO, not a second timeout_greeting)
  TLS versions (RFC 8996; tls_min_version)
      a TLS 1.1 client is refused (TLS 1.2 and 1.3 work); with
      tls_min_version TLSv1.3 a TLS 1.2 client is refused, TLS 1.3 works
  interoperability
      smtplib starttls() and SMTP_SSL verifying the certificate against the
      test CA; openssl s_client -starttls smtp / implicit with
      -verify_return_error; swaks --tls and --tls-on-connect
  certificate reload (SIGHUP)
      a new connection gets the new certificate once the smtp process logs
      event=tls-reload result=ok, while a connection opened before keeps
      working and delivers a message; a certificate/key pair that does not
      match is logged (result=failed) and the old certificate stays
  robustness
      a client that sends garbage instead of a ClientHello loses only its
      own connection; a client that leaves after "220 Ready" too
  configuration
      `tern serve` refuses a key that does not match the certificate (exit
      non-zero, "tls_certificate/tls_key"); check-config rejects
      tls_certificate without tls_key; `listen ... { tls none|starttls|
      implicit }` is accepted and `tls bogus` is not

Only loopback is used. Every tern is stopped by PID (the harness); no other
process outlives its test (openssl and swaks run with timeouts).
"""

import email
import email.policy
import hashlib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import tlsfixtures  # noqa: E402
from harness import DOMAIN, HOSTNAME, DEFAULT_TIMEOUT, TernTestCase  # noqa: E402

OPENSSL = tlsfixtures.OPENSSL
READY_RE = r"^2\.0\.0 Ready to start TLS"
SILENCE = 2.0          # seconds of "no reply arrives" (replies take ms even with ASan)
DELIVERY_TIMEOUT = 30.0
LOG_TIMEOUT = harness.WAIT
RELOAD_OK = r"\bsmtp\b.*\bevent=tls-reload result=ok\b"      # the smtp process took the new pair
RELOAD_FAILED = r"\btls-reload result=failed\b"               # parent or smtp process


# --------------------------------------------------------------------------
# client-side TLS helpers

def client_context(ca=None, minimum=None, maximum=None, legacy=False):
    """A client context. With ca: verify the chain and the host name
    (server_hostname); without: no verification (the test is about
    something else). legacy: allow TLS 1.0/1.1 and weak signatures on the
    client side (SECLEVEL=0), so that a refusal is the server's doing."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TLSv1_1 is deprecated
        if legacy:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
    return ctx


def tls11_context():
    return client_context(maximum=ssl.TLSVersion.TLSv1_1, legacy=True)


_TLS11_PROBE = {}


def tls11_client_unavailable(cert, key):
    """None if this Python/OpenSSL can complete a TLS 1.1 handshake at all
    (checked against a local Python server that allows it), else why not.
    Without this a "refused" TLS 1.1 client could be the client's own doing."""
    if "reason" in _TLS11_PROBE:
        return _TLS11_PROBE["reason"]
    srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        srv.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    srv.set_ciphers("DEFAULT:@SECLEVEL=0")
    srv.load_cert_chain(cert, key)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(10)

    def serve():
        try:
            conn, _ = ls.accept()
        except OSError:
            return
        conn.settimeout(10)
        try:
            with srv.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    reason = None
    try:
        with socket.create_connection(ls.getsockname(), timeout=10) as raw:
            with tls11_context().wrap_socket(raw) as s:
                if s.version() != "TLSv1.1":
                    reason = "a TLS 1.1-only client negotiated %s with a permissive server" % s.version()
    except (OSError, ssl.SSLError) as e:
        reason = "this Python/OpenSSL cannot speak TLS 1.1 even at SECLEVEL=0: %r" % e
    finally:
        ls.close()
        th.join(10)
    _TLS11_PROBE["reason"] = reason
    return reason


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def handshake(c, ctx, server_hostname=HOSTNAME, ragged_eof_ok=True):
    """Wrap SMTPClient c's socket in TLS and complete the handshake. On
    failure the exception propagates; c.close() still closes the socket.
    ragged_eof_ok=False (with OP_IGNORE_UNEXPECTED_EOF cleared in ctx): a
    TCP close without TLS close_notify raises ssl.SSLError instead of
    reading as a clean end of stream."""
    if c.buf:
        raise AssertionError("clear-text bytes pending before the handshake: %r" % c.buf[:200])
    ss = ctx.wrap_socket(c.sock, server_hostname=server_hostname, do_handshake_on_connect=False,
                         suppress_ragged_eofs=ragged_eof_ok)
    c.sock = ss
    ss.do_handshake()
    return ss


def peer_closes(sock, timeout=DEFAULT_TIMEOUT):
    """True if the peer closes the TCP connection under sock within timeout.
    Reads a duplicate of the descriptor, below any TLS layer (an SSLSocket
    whose handshake failed cannot be read through), discarding what comes
    (a TLS alert, say)."""
    try:
        fd = os.dup(sock.fileno())
    except OSError:
        raise AssertionError("socket already closed on our side")
    s = socket.socket(fileno=fd)
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            s.settimeout(left)
            try:
                data = s.recv(65536)
            except (socket.timeout, TimeoutError):
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
    finally:
        s.close()


def tls_info(c):
    """(version, cipher name) as Python's ssl sees them on c."""
    return c.sock.version(), c.sock.cipher()[0]


def try_handshake(c, ctx, server_hostname=HOSTNAME):
    """None if the handshake succeeded, else the exception. A timeout is
    not a refusal: it is raised as a failure."""
    try:
        handshake(c, ctx, server_hostname)
        return None
    except (socket.timeout, TimeoutError):
        raise AssertionError("TLS handshake hung (no answer within %.0fs)" % DEFAULT_TIMEOUT)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return e


def unfolded(value):
    return " ".join(str(value).split())


def comments(text):
    """The innermost (...) comments of a header value."""
    return re.findall(r"\(([^()]*)\)", text)


def parse_message(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def swaks_unavailable():
    if not shutil.which("swaks"):
        return "swaks not installed (make deps)"
    try:
        r = subprocess.run(["perl", "-MIO::Socket::SSL", "-MNet::SSLeay", "-e1"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "perl cannot be run: %r" % e
    if r.returncode != 0:
        return "swaks TLS needs perl IO::Socket::SSL and Net::SSLeay (libio-socket-ssl-perl; make deps)"
    return None


def check_swaks_transcript(testcase, out):
    """Every reply swaks saw (clear '<-'/'<**', TLS '<~'/'<~*'), other than
    the greetings and the EHLO answers, carries an RFC 2034 enhanced code."""
    last_cmd, cur, n = None, [], 0
    for line in out.splitlines():
        m = re.match(r"^ *(<-|<\*\*|<~\*|<~|->|~>|\*\*\*|===) ?\s*(.*)$", line)
        if not m:
            continue
        tag, text = m.groups()
        if tag in ("->", "~>"):
            last_cmd = text.split(" ", 1)[0].upper()
            continue
        if tag not in ("<-", "<**", "<~", "<~*"):
            continue
        cur.append(text.encode())
        if len(text) < 4 or text[3:4] != "-":
            r = harness.parse_reply_lines(cur)
            cur = []
            n += 1
            if last_cmd is not None and last_cmd not in ("EHLO", "HELO"):
                harness.check_enhanced(r, " (swaks after %s)" % last_cmd)
    testcase.assertGreater(n, 0, "no server replies in the swaks transcript:\n%s" % out)


# --------------------------------------------------------------------------
# base class: a PKI in a private directory under /tmp, and tern with it

class TlsCase(TernTestCase):
    """One tern per class with tls_certificate/tls_key from a test CA.
    Subclasses override tern_config() to add options or listeners."""

    workdir = None
    pki = None
    cert = key = None

    @classmethod
    def tern_config(cls):
        """kwargs for harness.Tern (called after the PKI exists)."""
        return {"options": {"tls_certificate": cls.cert, "tls_key": cls.key}}

    @classmethod
    def setUpClass(cls):
        cls.workdir = None
        reason = harness.binary_missing_reason() or tlsfixtures.openssl_missing_reason()
        if reason:
            cls.tern, cls._setup_error, cls._skip_reason = None, None, reason
            return
        cls.workdir = tempfile.mkdtemp(prefix="tern-tls-", dir="/tmp")
        os.chmod(cls.workdir, 0o700)     # keys: root only (tern reads them as root)
        try:
            cls.pki = tlsfixtures.Pki(cls.workdir)
            cls.cert, cls.key = cls.pki.issue(HOSTNAME, ips=["127.0.0.1"])
            os.chmod(cls.key, 0o600)
            cls.TERN_OPTIONS = cls.tern_config()
        except Exception as e:
            cls.tern, cls._skip_reason = None, None
            cls._setup_error = "test PKI could not be made: %s" % e
            return
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if cls.workdir and not os.environ.get("TERN_TEST_KEEP"):
                shutil.rmtree(cls.workdir, ignore_errors=True)

    # -- helpers
    def ctx(self, **kw):
        """A client context trusting the test CA (check_hostname on)."""
        return client_context(ca=self.pki.ca_cert, **kw)

    def starttls(self, c, ctx=None, verb="STARTTLS", server_hostname=HOSTNAME):
        """STARTTLS on SMTPClient c, expecting 220 2.0.0, then the handshake."""
        r = c.cmd(verb)
        self.assertReply(r, 220, "2.0.0", "STARTTLS")
        self.assertRegex(r.lines[0], READY_RE)
        self.assertEqual(c.buf, b"", "clear text after '220 Ready to start TLS'")
        handshake(c, ctx or self.ctx(), server_hostname)
        return c

    def tls_session(self, ctx=None, ehlo=True, port=None):
        """A session that said EHLO, did STARTTLS and (ehlo) EHLO again."""
        c = self.tern.session(port=port)
        try:
            self.assertIn("STARTTLS", c.extensions, "EHLO does not offer STARTTLS: %r" % c.ehlo_lines)
            self.starttls(c, ctx)
            if ehlo:
                self.assertReply(c.ehlo(), 250, msg="EHLO after the handshake")
        except BaseException:
            c.close()
            raise
        return c

    def implicit_client(self, port, ctx=None, server_hostname=HOSTNAME, ragged_eof_ok=True):
        """TLS from the first byte; returns the client, greeting not read."""
        c = harness.SMTPClient(port)
        try:
            handshake(c, ctx or self.ctx(), server_hostname, ragged_eof_ok)
        except BaseException:
            c.close()
            raise
        return c

    def assertSilent(self, c, secs=SILENCE, what="nothing expected"):
        """No byte of application data arrives on c within secs (and the
        connection stays open)."""
        self.assertEqual(c.buf, b"", "%s: already buffered %r" % (what, c.buf[:200]))
        old = c.sock.gettimeout()
        c.sock.settimeout(secs)
        try:
            data = c.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return
        except ssl.SSLError as e:
            self.fail("%s: TLS error while waiting: %r" % (what, e))
        finally:
            try:
                c.sock.settimeout(old)
            except OSError:
                pass
        if data == b"":
            self.fail("%s: the server closed the connection" % what)
        self.fail("%s: the server sent %r" % (what, data[:300]))

    def assertTlsReceived(self, raw, version, cipher, what=""):
        """tern's Received field (the first one) says ESMTPS and names the
        version and cipher in a comment (RFC 3848, RFC 8314 4.3)."""
        msg = parse_message(raw)
        rec = msg.get_all("Received") or []
        self.assertTrue(rec, "%s: no Received field in %r" % (what, raw[:500]))
        first = unfolded(rec[0])
        self.assertIn("by " + HOSTNAME, first, what)
        self.assertRegex(first, r"\bwith ESMTPS\b", "%s: not marked ESMTPS (RFC 3848): %s" % (what, first))
        self.assertRegex(first, r"TLSv1\.[23]", "%s: no TLS version in %s" % (what, first))
        ok = [cm for cm in comments(first)
              if re.search(r"(?<![\w.])%s(?![\w.])" % re.escape(version), cm)
              and re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(cipher), cm)]
        self.assertTrue(ok, "%s: no comment naming %s and %s in Received: %s" % (what, version, cipher, first))
        return first

    def session_id(self, c, timeout=LOG_TIMEOUT):
        """tern's session id for client c, from its event=connect log line
        (client=127.0.0.1:LOCALPORT)."""
        port = c.sock.getsockname()[1]
        pat = re.compile(r"\bsession=(\S+) event=connect client=127\.0\.0\.1:%d\b" % port)
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.tern.log_text())
            if m:
                return m.group(1)
            if time.monotonic() > deadline:
                self.fail("no event=connect line for client port %d; log tail:\n%s"
                          % (port, self.tern.log_text()[-2000:]))
            time.sleep(0.1)

    def wait_log(self, regex, count=1, timeout=LOG_TIMEOUT, what=""):
        """Lines of the log matching regex, once there are at least count."""
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            lines = [l for l in self.tern.log_text().splitlines() if pat.search(l)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                self.fail("%s: %d log line(s) match %r, expected %d; log tail:\n%s"
                          % (what or "log", len(lines), regex, count, self.tern.log_text()[-2500:]))
            time.sleep(0.1)

    def send_and_fetch(self, c, user, what):
        """A message to user on c (EHLO already said); its delivered text."""
        tok = harness.token("tls")
        r = c.send_message("sender@client.test", ["%s@%s" % (user, DOMAIN)], harness.simple_body(tok))
        self.assertReply(r, 250, "2.0.0", "%s: end of data" % what)
        self.assertTrue(harness.queue_id(r.text), r)
        return self.tern.wait_for_token(tok, user, timeout=DELIVERY_TIMEOUT)

    def quit(self, c):
        try:
            c.cmd("QUIT")
        except (harness.ProtocolError, OSError):
            pass
        c.close()

    def openssl_client(self, args, stdin=b"QUIT\n", timeout=60):
        """openssl s_client ARGS; (exit status, stdout+stderr). Without
        -ign_eof s_client leaves at the end of its input, so its exit status
        says whether the handshake and verification went well, not how the
        server closes (test_quit_closes_tls_cleanly checks that)."""
        cmd = [OPENSSL, "s_client"] + args
        try:
            p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self.fail("%s did not finish within %ds; output:\n%s"
                      % (" ".join(cmd), timeout, (e.stdout or b"").decode("utf-8", "replace")))
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def assertOpensslOk(self, rc, out, what):
        self.assertEqual(rc, 0, "%s: openssl s_client exited %d:\n%s" % (what, rc, out))
        self.assertTrue(re.search(r"Verification: OK|Verify return code: 0 \(ok\)", out),
                        "%s: certificate not verified:\n%s" % (what, out))
        self.assertRegex(out, r"Protocol version: TLSv1\.[23]|Protocol *: TLSv1\.[23]", what)

    def swaks(self, port, *args, expect_rc=0):
        reason = swaks_unavailable()
        if reason:
            self.skipTest(reason)
        cmd = ["swaks", "--server", "127.0.0.1", "--port", str(port), "--helo", "client.test",
               "--timeout", "30"] + list(args)
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=120)
        except subprocess.TimeoutExpired as e:
            self.fail("swaks did not finish within 120s:\n%s" % (e.stdout or b"").decode("utf-8", "replace"))
        out = p.stdout.decode("utf-8", "replace")
        if expect_rc is not None and p.returncode != expect_rc:
            self.fail("swaks exited %d (expected %d):\n%s" % (p.returncode, expect_rc, out))
        check_swaks_transcript(self, out)
        return out

    def swaks_tls_info(self, out):
        m = re.search(r"=== TLS started with cipher (TLSv1\.[23]):([A-Za-z0-9_-]+)", out)
        self.assertTrue(m, "swaks did not report a TLS 1.2/1.3 session:\n%s" % out)
        return m.group(1), m.group(2)


# --------------------------------------------------------------------------
# STARTTLS on the harness listener (default: starttls)

class StartTls(TlsCase):

    # -- advertisement and the command
    def test_smtp_process_loaded_the_certificate(self):
        # the smtp process reads certificate and key as root, before it
        # drops privileges and chroots; otherwise it logs tls-unavailable
        with self.tern.session():
            pass
        bad = [l for l in self.tern.log_text().splitlines() if "tls-unavailable" in l]
        self.assertEqual(bad, [], "the smtp process could not load tls_certificate/tls_key")

    def test_ehlo_advertises_starttls(self):
        with self.tern.session() as c:
            self.assertIn("STARTTLS", c.extensions, c.ehlo_lines)
            self.assertEqual(c.extensions["STARTTLS"], "", "STARTTLS takes no EHLO parameter")

    def test_starttls_handshake_verifies_and_resets_state(self):
        with self.tern.session() as c:
            before = set(c.extensions)
            self.starttls(c, verb="starttls")          # verbs are case-insensitive (RFC 5321 2.4)
            ss = c.sock
            self.assertIn(ss.version(), ("TLSv1.2", "TLSv1.3"))
            cert = ss.getpeercert()
            self.assertIn(("DNS", HOSTNAME), cert.get("subjectAltName", ()))
            self.assertEqual(fingerprint(ss.getpeercert(binary_form=True)), fingerprint(der_of(self.cert)))
            # RFC 3207 4.2: back to the state after the greeting; the
            # server sends nothing of its own (no second 220)
            self.assertSilent(c, what="after the handshake")
            r = c.cmd("MAIL FROM:<sender@client.test>")
            self.assertReply(r, 503, "5.5.1", "MAIL before EHLO after the handshake")
            r = c.ehlo()
            self.assertReply(r, 250, msg="EHLO after the handshake")
            after = set(c.extensions)
            self.assertNotIn("STARTTLS", after, "STARTTLS offered again after the handshake (RFC 3207 4.2)")
            self.assertEqual(before - {"STARTTLS"} - after, set(),
                             "extensions lost after the handshake: %r -> %r" % (sorted(before), sorted(after)))
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.quit(c)

    def test_quit_over_tls_gets_221(self):
        # RFC 5321 4.1.1.10: QUIT is answered (221) before the close; over
        # TLS the reply must be flushed through TLS before the socket goes
        with self.tls_session() as c:
            self.assertReply(c.cmd("QUIT"), 221, "2.0.0", "QUIT after STARTTLS")
            self.assertTrue(c.wait_closed(DEFAULT_TIMEOUT), "connection still open after 221")

    def test_starttls_with_argument(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("STARTTLS now"), 501, "5.5.4", "STARTTLS with an argument (RFC 3207 4)")
            # no handshake began: the session goes on in clear text
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0", "clear text after the 501")
            self.starttls(c)
            self.assertReply(c.ehlo(), 250)

    def test_starttls_inside_transaction(self):
        with self.tern.session() as c:
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS after MAIL")
            self.assertReply(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250, "2.1.5", "transaction intact after the 503")
            self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS after RCPT")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.starttls(c)                           # no transaction: allowed
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0",
                             "no transaction survives the handshake")

    def test_starttls_when_tls_active(self):
        with self.tls_session() as c:
            self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS inside TLS (after EHLO)")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0", "the TLS session goes on")
        with self.tls_session(ehlo=False) as c:
            self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS inside TLS (before EHLO)")
            self.assertReply(c.ehlo(), 250)
            self.assertNotIn("STARTTLS", c.extensions)

    def test_pipelined_ehlo_then_starttls(self):
        # RFC 2920 / RFC 3207 4: STARTTLS may end a pipelined group
        with self.tern.client() as c:
            self.assertEqual(c.greeting().code, 220)
            c.send("EHLO client.test\r\nSTARTTLS\r\n")
            r = c.read_reply(check=False)
            self.assertReply(r, 250, msg="EHLO")
            self.assertTrue(any(l.upper() == "STARTTLS" for l in r.lines[1:]), r)
            r = c.read_reply()
            self.assertReply(r, 220, "2.0.0", "pipelined STARTTLS")
            handshake(c, self.ctx())
            self.assertReply(c.ehlo(), 250)
            self.assertNotIn("STARTTLS", c.extensions)

    # -- CVE-2011-0411
    def test_injection_mail_discarded(self):
        with self.tern.session() as c:
            c.send("STARTTLS\r\nMAIL FROM:<injected@client.test>\r\n")
            r = c.read_reply()
            self.assertReply(r, 220, "2.0.0", "STARTTLS")
            self.assertEqual(c.buf, b"", "a clear-text reply to the injected MAIL")
            handshake(c, self.ctx())
            self.assertSilent(c, what="the injected MAIL was answered over TLS")
            # all state forgotten: no EHLO yet, so MAIL is 503 ...
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 503, "5.5.1",
                             "MAIL before EHLO after the handshake")
            self.assertReply(c.ehlo(), 250)
            # ... and the injected MAIL left no transaction open (no "nested MAIL")
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.quit(c)

    def test_injection_rset_discarded(self):
        with self.tern.session() as c:
            c.send(b"STARTTLS\r\nRSET\r\n")
            self.assertReply(c.read_reply(), 220, "2.0.0", "STARTTLS")
            self.assertEqual(c.buf, b"", "a clear-text reply to the injected RSET")
            handshake(c, self.ctx())
            self.assertSilent(c, what="the injected RSET was answered over TLS")
            n = len(c.replies)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertSilent(c, what="a second reply after NOOP (the injected RSET's)")
            self.assertEqual(len(c.replies), n + 1)

    def test_injection_in_pipelined_group_discarded(self):
        # EHLO, STARTTLS and an injected transaction in one write: only
        # EHLO and STARTTLS are answered
        u = self.tern.fresh_user()
        with self.tern.client() as c:
            self.assertEqual(c.greeting().code, 220)
            c.send("EHLO client.test\r\nSTARTTLS\r\nMAIL FROM:<x@client.test>\r\nRCPT TO:<%s@%s>\r\nDATA\r\n"
                   "Subject: injected\r\n\r\ninjected\r\n.\r\n" % (u, DOMAIN))
            self.assertReply(c.read_reply(check=False), 250, msg="EHLO")
            self.assertReply(c.read_reply(), 220, "2.0.0", "STARTTLS")
            self.assertEqual(c.buf, b"", "clear-text replies to the injected commands")
            handshake(c, self.ctx())
            self.assertSilent(c, what="injected commands answered over TLS")
            self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (u, DOMAIN)), 503, "5.5.1",
                             "RCPT after the handshake (no EHLO, no MAIL)")
        self.assertNoMail(u)

    # -- trace information and the log
    def test_received_says_esmtps_tls13(self):
        u = self.tern.fresh_user()
        with self.tls_session() as c:
            version, cipher = tls_info(c)
            raw = self.send_and_fetch(c, u, "over TLS")
            self.quit(c)
        self.assertTlsReceived(raw, version, cipher, "default client")

    def test_received_says_esmtps_tls12(self):
        u = self.tern.fresh_user()
        ctx = self.ctx(maximum=ssl.TLSVersion.TLSv1_2)
        with self.tls_session(ctx) as c:
            version, cipher = tls_info(c)
            self.assertEqual(version, "TLSv1.2", "a TLS 1.2 client is accepted by default (tls_min_version)")
            raw = self.send_and_fetch(c, u, "over TLS 1.2")
            self.quit(c)
        self.assertTlsReceived(raw, version, cipher, "TLS 1.2 client")

    def test_received_in_clear_text_says_esmtp(self):
        u = self.tern.fresh_user()
        with self.tern.session() as c:
            raw = self.send_and_fetch(c, u, "clear text")
            self.quit(c)
        first = unfolded(parse_message(raw).get_all("Received")[0])
        self.assertRegex(first, r"\bwith ESMTP\b(?!S)", first)
        self.assertNotRegex(first, r"TLSv1", "a clear-text session claims TLS: %s" % first)

    def test_log_names_version_and_cipher(self):
        with self.tls_session() as c:
            version, cipher = tls_info(c)
            sid = self.session_id(c)
            lines = self.wait_log(r"\bsession=%s\b.*\bevent=tls(?=\s|$)" % re.escape(sid),
                                  what="event=tls for session %s" % sid)
            self.quit(c)
        line = lines[0]
        self.assertRegex(line, r"(?<![\w.])%s(?![\w.])" % re.escape(version), line)
        self.assertRegex(line, r"(?<![\w-])%s(?![\w-])" % re.escape(cipher), line)

    # -- versions
    def test_tls11_refused(self):
        reason = tls11_client_unavailable(self.cert, self.key)
        if reason:
            self.skipTest(reason)
        with self.tern.session() as c:
            self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
            err = try_handshake(c, tls11_context())
            self.assertIsNotNone(err, "a TLS 1.1 client completed the handshake (%s)"
                                 % (c.sock.version() if err is None else ""))
            # nothing goes on in clear text on that connection
            self.assertTrue(peer_closes(c.sock), "connection left open after the failed handshake")
        # tern keeps serving TLS
        with self.tls_session() as c2:
            self.assertReply(c2.cmd("NOOP"), 250, "2.0.0")

    # -- other clients
    def test_smtplib_starttls(self):
        u = self.tern.fresh_user()
        tok = harness.token("smtplib-tls")
        with self.tern.smtp() as s:
            s.ehlo()
            self.assertTrue(s.has_extn("starttls"), s.esmtp_features)
            # smtplib verifies the name it connected to (self._host); make
            # that the certificate's name rather than 127.0.0.1
            s._host = HOSTNAME
            code, msg = s.starttls(context=self.ctx())
            self.assertEqual(code, 220, msg)
            self.assertRegex(msg.decode(), READY_RE)
            self.assertIn(("DNS", HOSTNAME), s.sock.getpeercert()["subjectAltName"])
            version, cipher = s.sock.version(), s.sock.cipher()[0]
            code, _ = s.ehlo()
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"), "STARTTLS after the handshake")
            refused = s.sendmail("sender@client.test", ["%s@%s" % (u, DOMAIN)],
                                 harness.simple_body(tok))
            self.assertEqual(refused, {})
        raw = self.tern.wait_for_token(tok, u, timeout=DELIVERY_TIMEOUT)
        self.assertTlsReceived(raw, version, cipher, "smtplib")

    def test_openssl_s_client_starttls(self):
        rc, out = self.openssl_client(["-starttls", "smtp", "-connect", "127.0.0.1:%d" % self.tern.port,
                                       "-CAfile", self.pki.ca_cert, "-verify_return_error",
                                       "-verify_hostname", HOSTNAME, "-servername", HOSTNAME,
                                       "-brief", "-crlf"])
        self.assertOpensslOk(rc, out, "s_client -starttls smtp")

    def test_openssl_s_client_rejects_untrusted_ca(self):
        # the check above means something: with another CA it fails
        other = tlsfixtures.Pki(tempfile.mkdtemp(prefix="tern-tls-other-", dir=self.workdir))
        rc, out = self.openssl_client(["-starttls", "smtp", "-connect", "127.0.0.1:%d" % self.tern.port,
                                       "-CAfile", other.ca_cert, "-verify_return_error", "-brief", "-crlf"])
        self.assertNotEqual(rc, 0, "s_client accepted a certificate from an unknown CA:\n%s" % out)

    def test_swaks_tls(self):
        u = self.tern.fresh_user()
        tok = harness.token("swaks-tls")
        out = self.swaks(self.tern.port, "--tls", "--tls-verify", "--tls-ca-path", self.pki.ca_cert,
                         "--tls-sni", HOSTNAME, "--to", "%s@%s" % (u, DOMAIN), "--from", "sender@client.test",
                         "--header", "Subject: %s" % tok)
        self.assertRegex(out, r"(?m)^<-  220 2\.0\.0 Ready to start TLS")
        version, cipher = self.swaks_tls_info(out)
        self.assertRegex(out, r"(?m)^ ?~> EHLO client\.test")
        self.assertRegex(out, r"(?m)^<~  250 2\.0\.0 Ok: queued as [0-9A-Fa-f]{16}")
        self.assertNotRegex(out, r"(?m)^ ?-> MAIL", "MAIL went in clear text")
        raw = self.tern.wait_for_token(tok, u, timeout=DELIVERY_TIMEOUT)
        self.assertTlsReceived(raw, version, cipher, "swaks --tls")

    # -- robustness
    def test_garbage_instead_of_client_hello(self):
        with self.tern.session() as bystander, self.tern.session() as c:
            self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
            c.send(b"EHLO this is not a TLS ClientHello\r\n" * 8)
            self.assertTrue(c.wait_closed(DEFAULT_TIMEOUT), "connection not closed after a failed handshake")
            # whatever came back (a TLS alert at most) is no SMTP reply
            self.assertIsNone(re.match(rb"\d{3}[ -]", c.buf), "clear-text SMTP after '220 Ready': %r" % c.buf[:200])
            # only that connection is gone
            self.assertReply(bystander.cmd("NOOP"), 250, "2.0.0", "another session after the failed handshake")
        with self.tls_session() as c2:
            self.assertReply(c2.cmd("NOOP"), 250, "2.0.0")

    def test_client_leaves_after_ready(self):
        c = self.tern.session()
        self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
        c.close()
        with self.tls_session() as c2:
            self.assertReply(c2.cmd("NOOP"), 250, "2.0.0")


# --------------------------------------------------------------------------
# implicit TLS (and a listener with TLS off), next to the STARTTLS one

class ImplicitTls(TlsCase):
    iport = nport = None

    @classmethod
    def tern_config(cls):
        cls.iport, cls.nport = harness.free_port(), harness.free_port()
        while cls.nport == cls.iport:
            cls.nport = harness.free_port()
        kw = super().tern_config()
        kw["extra_config"] = ("listen 127.0.0.1:%d {\n    tls implicit\n}\n"
                              "listen 127.0.0.1:%d {\n    tls none\n}\n" % (cls.iport, cls.nport))
        return kw

    def greet(self, c):
        g = c.greeting()
        self.assertEqual(g.code, 220, "greeting inside TLS: %r" % g)
        self.assertTrue(g.lines[0].startswith(HOSTNAME), g)
        return g

    def test_no_clear_text_greeting(self):
        s = socket.create_connection(("127.0.0.1", self.iport), timeout=DEFAULT_TIMEOUT)
        try:
            s.settimeout(SILENCE)
            try:
                data = s.recv(4096)
            except (socket.timeout, TimeoutError, ConnectionResetError):
                data = b""
            # a TLS server speaks after the ClientHello: no 220, no byte at all
            self.assertEqual(data, b"", "implicit-TLS port sent %r to a client that said nothing" % data[:100])
        finally:
            s.close()

    def test_clear_text_smtp_gets_no_smtp_answer(self):
        c = harness.SMTPClient(self.iport)
        try:
            c.send("EHLO client.test\r\n")
            self.assertTrue(c.wait_closed(DEFAULT_TIMEOUT), "clear text on the implicit-TLS port: not closed")
            self.assertIsNone(re.search(rb"(^|\r\n)(220|250|5\d\d)[ -]", c.buf),
                              "clear-text SMTP answered on the implicit-TLS port: %r" % c.buf[:200])
        finally:
            c.close()

    def test_greeting_inside_tls_and_ehlo(self):
        with self.implicit_client(self.iport) as c:
            self.assertIn(c.sock.version(), ("TLSv1.2", "TLSv1.3"))
            self.assertEqual(fingerprint(c.sock.getpeercert(binary_form=True)), fingerprint(der_of(self.cert)))
            self.greet(c)
            self.assertReply(c.ehlo(), 250)
            self.assertNotIn("STARTTLS", c.extensions, "STARTTLS offered on an implicit-TLS listener")
            self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS with TLS active")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.quit(c)

    def test_transaction_delivered_with_esmtps(self):
        u = self.tern.fresh_user()
        with self.implicit_client(self.iport) as c:
            self.greet(c)
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 503, "5.5.1", "MAIL before EHLO")
            self.assertReply(c.ehlo(), 250)
            version, cipher = tls_info(c)
            raw = self.send_and_fetch(c, u, "implicit TLS")
            self.quit(c)
        self.assertTlsReceived(raw, version, cipher, "implicit TLS")

    def test_log_names_version_and_cipher(self):
        with self.implicit_client(self.iport) as c:
            self.greet(c)
            version, cipher = tls_info(c)
            sid = self.session_id(c)
            lines = self.wait_log(r"\bsession=%s\b.*\bevent=tls(?=\s|$)" % re.escape(sid),
                                  what="event=tls for implicit session %s" % sid)
            self.quit(c)
        self.assertRegex(lines[0], r"(?<![\w.])%s(?![\w.])" % re.escape(version))
        self.assertRegex(lines[0], r"(?<![\w-])%s(?![\w-])" % re.escape(cipher))

    def test_smtp_ssl(self):
        u = self.tern.fresh_user()
        tok = harness.token("smtps")
        # SMTP_SSL verifies the address it connects to: the certificate
        # also names IP 127.0.0.1
        with smtplib.SMTP_SSL("127.0.0.1", self.iport, local_hostname="client.test",
                              timeout=DEFAULT_TIMEOUT, context=self.ctx()) as s:
            code, _ = s.ehlo()
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"))
            version, cipher = s.sock.version(), s.sock.cipher()[0]
            self.assertEqual(s.sendmail("sender@client.test", ["%s@%s" % (u, DOMAIN)],
                                        harness.simple_body(tok)), {})
        raw = self.tern.wait_for_token(tok, u, timeout=DELIVERY_TIMEOUT)
        self.assertTlsReceived(raw, version, cipher, "SMTP_SSL")

    def test_tls11_refused(self):
        reason = tls11_client_unavailable(self.cert, self.key)
        if reason:
            self.skipTest(reason)
        c = harness.SMTPClient(self.iport)
        try:
            err = try_handshake(c, tls11_context())
            self.assertIsNotNone(err, "a TLS 1.1 client completed an implicit-TLS handshake")
        finally:
            c.close()
        with self.implicit_client(self.iport) as c2:
            self.greet(c2)

    def test_garbage_handshake_keeps_serving(self):
        with self.implicit_client(self.iport) as bystander:
            self.greet(bystander)
            s = socket.create_connection(("127.0.0.1", self.iport), timeout=DEFAULT_TIMEOUT)
            try:
                s.sendall(b"\x16\x03\x01\x00\x05garbage that is no ClientHello\r\n" * 4)
                s.settimeout(DEFAULT_TIMEOUT)
                try:
                    while s.recv(4096):
                        pass
                except (ConnectionResetError, socket.timeout, TimeoutError):
                    pass
            finally:
                s.close()
            self.assertReply(bystander.cmd("NOOP"), 250, "2.0.0")
        with self.implicit_client(self.iport) as c:
            self.greet(c)

    def test_openssl_s_client_implicit(self):
        rc, out = self.openssl_client(["-connect", "127.0.0.1:%d" % self.iport, "-CAfile", self.pki.ca_cert,
                                       "-verify_return_error", "-verify_hostname", HOSTNAME,
                                       "-servername", HOSTNAME, "-brief", "-crlf"])
        self.assertOpensslOk(rc, out, "s_client on the implicit-TLS port")

    def test_swaks_tls_on_connect(self):
        u = self.tern.fresh_user()
        tok = harness.token("swaks-tlsc")
        out = self.swaks(self.iport, "--tls-on-connect", "--tls-verify", "--tls-ca-path", self.pki.ca_cert,
                         "--tls-sni", HOSTNAME, "--to", "%s@%s" % (u, DOMAIN), "--from", "sender@client.test",
                         "--header", "Subject: %s" % tok)
        version, cipher = self.swaks_tls_info(out)
        self.assertRegex(out, r"(?m)^<~  220 %s" % re.escape(HOSTNAME), "greeting not inside TLS:\n%s" % out)
        self.assertRegex(out, r"(?m)^<~  250 2\.0\.0 Ok: queued as [0-9A-Fa-f]{16}")
        raw = self.tern.wait_for_token(tok, u, timeout=DELIVERY_TIMEOUT)
        self.assertTlsReceived(raw, version, cipher, "swaks --tls-on-connect")

    def test_quit_closes_tls_cleanly(self):
        # RFC 8314 3.4 (SHOULD): TLS closure alerts before the TCP close,
        # so that a client can tell the end of the session from a truncation
        ctx = self.ctx()
        ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)   # Python sets it by default
        with self.implicit_client(self.iport, ctx, ragged_eof_ok=False) as c:
            self.greet(c)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
            try:
                data = c.sock.recv(4096)
            except ssl.SSLError as e:      # UNEXPECTED_EOF_WHILE_READING / SSLEOFError
                self.fail("the server closed TCP without a TLS close_notify after QUIT (RFC 8314 3.4): %r" % e)
            except (socket.timeout, TimeoutError):
                self.fail("connection still open %.0fs after 221" % DEFAULT_TIMEOUT)
            self.assertEqual(data, b"", "data after 221: %r" % data[:200])

    def test_starttls_listener_still_offers_starttls(self):
        with self.tls_session() as c:
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_tls_none_listener(self):
        with self.tern.session(port=self.nport) as c:
            self.assertNotIn("STARTTLS", c.extensions, "STARTTLS offered on a 'tls none' listener")
            r = c.cmd("STARTTLS")
            # not offered there: refused like an unknown command (or a bad sequence)
            self.assertReplyIn(r, [(502, "5.5.1"), (503, "5.5.1")], "STARTTLS on a 'tls none' listener")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0", "clear text goes on")


# --------------------------------------------------------------------------
# implicit TLS: one timeout_greeting for the handshake and the EHLO together

class ImplicitTlsGreetingDeadline(TlsCase):
    """timeout_greeting runs from the connection's start on an implicit-TLS
    listener: a client that spends most of it on the handshake does not get
    a second one for its EHLO (it had up to twice timeout_greeting)."""
    GREETING = 3.0
    iport = None

    @classmethod
    def tern_config(cls):
        cls.iport = harness.free_port()
        kw = super().tern_config()
        kw["options"]["timeout_greeting"] = "%ds" % cls.GREETING
        kw["extra_config"] = "listen 127.0.0.1:%d {\n    tls implicit\n}\n" % cls.iport
        return kw

    def closed_after(self, sock, t0):
        """Seconds from t0 until the peer closes sock (reading and dropping
        what comes); fails after DEFAULT_TIMEOUT."""
        sock.settimeout(DEFAULT_TIMEOUT)
        got = b""
        while True:
            try:
                data = sock.recv(4096)
            except (ConnectionResetError, ssl.SSLEOFError):
                data = b""
            except (socket.timeout, TimeoutError):
                self.fail("still open %.0fs after the connect" % (time.monotonic() - t0))
            if not data:
                return time.monotonic() - t0, got
            got += data

    def assertAboutOneGreeting(self, elapsed, what):
        # never before the deadline; well before a second one would end
        self.assertGreaterEqual(elapsed, self.GREETING - 0.2, "%s: closed early" % what)
        self.assertLess(elapsed, 1.5 * self.GREETING,
                        "%s: open %.1fs with timeout_greeting %.0fs" % (what, elapsed, self.GREETING))

    def test_silent_client_closed_within_greeting(self):
        s = socket.create_connection(("127.0.0.1", self.iport), timeout=DEFAULT_TIMEOUT)
        t0 = time.monotonic()
        try:
            elapsed, _ = self.closed_after(s, t0)
        finally:
            s.close()
        self.assertAboutOneGreeting(elapsed, "a client that sends nothing")

    def test_slow_handshake_leaves_less_for_ehlo(self):
        # the handshake at two thirds of timeout_greeting, then silence:
        # the 421 comes at timeout_greeting from the connect, not after
        # another timeout_greeting
        for attempt in range(3):
            c = harness.SMTPClient(self.iport)
            t0 = time.monotonic()
            try:
                time.sleep(2 * self.GREETING / 3)
                try:
                    handshake(c, self.ctx())
                except (ssl.SSLError, OSError):
                    if time.monotonic() - t0 >= self.GREETING and attempt < 2:
                        continue   # this machine overslept the sleep: again
                    raise
                g = c.greeting()
                self.assertEqual(g.code, 220, g)
                elapsed, rest = self.closed_after(c.sock, t0)
            finally:
                c.close()
            break
        self.assertIn(b"421 4.4.2", c.buf + rest, "no 421 before the close")
        self.assertAboutOneGreeting(elapsed, "a client that was slow to shake hands")
        self.tern.wait_log("reason=timeout stage=greeting")


# --------------------------------------------------------------------------
# tls_min_version TLSv1.3

class MinVersion13(TlsCase):

    @classmethod
    def tern_config(cls):
        kw = super().tern_config()
        kw["options"]["tls_min_version"] = "TLSv1.3"
        return kw

    def test_tls12_client_refused(self):
        with self.tern.session() as c:
            self.assertIn("STARTTLS", c.extensions)
            self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
            err = try_handshake(c, self.ctx(maximum=ssl.TLSVersion.TLSv1_2))
            self.assertIsNotNone(err, "a TLS 1.2 client completed the handshake with tls_min_version TLSv1.3")
            self.assertTrue(peer_closes(c.sock), "connection left open after the failed handshake")

    def test_tls13_client_works(self):
        u = self.tern.fresh_user()
        with self.tls_session(self.ctx(minimum=ssl.TLSVersion.TLSv1_3)) as c:
            version, cipher = tls_info(c)
            self.assertEqual(version, "TLSv1.3")
            raw = self.send_and_fetch(c, u, "TLS 1.3")
            self.quit(c)
        self.assertTlsReceived(raw, version, cipher, "TLS 1.3 only")

    def test_default_client_negotiates_tls13(self):
        with self.tls_session() as c:
            self.assertEqual(c.sock.version(), "TLSv1.3")


# --------------------------------------------------------------------------
# no certificate configured

class NoCertificate(TernTestCase):

    def test_no_starttls_without_certificate(self):
        with self.tern.session() as c:
            self.assertNotIn("STARTTLS", c.extensions, c.ehlo_lines)
            self.assertReply(c.cmd("STARTTLS"), 502, "5.5.1", "STARTTLS without a certificate")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.cmd("MAIL FROM:<sender@client.test>"), 250, "2.1.0", "clear text goes on")


# --------------------------------------------------------------------------
# SIGHUP: a new certificate for new connections; old connections go on

class Reload(TlsCase):
    """Each test has its own tern (its certificate changes)."""
    NEEDS_TERN = False

    @classmethod
    def tern_config(cls):
        return {}

    def setUp(self):
        super().setUp()
        reason = harness.root_users_missing_reason()
        if reason:
            self.skipTest(reason)
        self.dir = tempfile.mkdtemp(prefix="reload-", dir=self.workdir)
        self.cert_path = os.path.join(self.dir, "server.pem")
        self.key_path = os.path.join(self.dir, "server.key")
        self.a = self.pki.issue(HOSTNAME, ips=["127.0.0.1"])
        self.b = self.pki.issue(HOSTNAME, ips=["127.0.0.1"])
        self.install(*self.a)
        t = harness.Tern(options={"tls_certificate": self.cert_path, "tls_key": self.key_path})
        self.addCleanup(self.stop_tern, t)
        t.start()
        self.tern = t          # instance attribute: shadows the class's None

    def stop_tern(self, t):
        t.stop()
        report = t.sanitizer_report()
        if report:
            raise AssertionError("sanitizer report in tern stderr (dir %s):\n%s" % (t.dir, report))
        t.cleanup()

    def install(self, cert, key):
        """Copy a pair over the configured paths (modes kept: key 0600)."""
        for src, dst, mode in ((cert, self.cert_path, 0o644), (key, self.key_path, 0o600)):
            with open(src, "rb") as f:
                data = f.read()
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(dst, mode)

    def presented(self):
        """SHA-256 of the DER certificate a new STARTTLS connection gets."""
        with self.tls_session() as c:
            fp = fingerprint(c.sock.getpeercert(binary_form=True))
            self.quit(c)
        return fp

    def count(self, regex):
        return len([l for l in self.tern.log_text().splitlines() if re.search(regex, l)])

    def hup(self):
        os.kill(self.tern.proc.pid, signal.SIGHUP)

    def test_new_certificate_for_new_connections_old_ones_go_on(self):
        fa, fb = fingerprint(der_of(self.a[0])), fingerprint(der_of(self.b[0]))
        self.assertNotEqual(fa, fb)
        u = self.tern.fresh_user()
        c1 = self.tls_session()
        try:
            self.assertEqual(fingerprint(c1.sock.getpeercert(binary_form=True)), fa, "certificate A at start")
            ok_before = self.count(RELOAD_OK)
            self.install(*self.b)
            self.hup()
            self.wait_log(RELOAD_OK, count=ok_before + 1,
                          what="smtp process took the new certificate")
            self.assertEqual(self.presented(), fb, "a new connection after SIGHUP gets certificate B")
            # connection 1 was not dropped and still works
            self.assertReply(c1.cmd("NOOP"), 250, "2.0.0", "connection opened before the reload")
            version, cipher = tls_info(c1)
            raw = self.send_and_fetch(c1, u, "old connection after the reload")
            self.quit(c1)
        finally:
            c1.close()
        self.assertTlsReceived(raw, version, cipher, "old connection after the reload")
        self.assertTrue(self.tern.running())

    def test_mismatched_pair_keeps_old_certificate(self):
        fa, fb = fingerprint(der_of(self.a[0])), fingerprint(der_of(self.b[0]))
        with self.tls_session() as c1:
            failed_before = self.count(RELOAD_FAILED)
            self.install(self.b[0], self.a[1])         # B's certificate, A's key
            self.hup()
            lines = self.wait_log(RELOAD_FAILED, count=failed_before + 1,
                                  what="a key that does not match is reported")
            self.assertTrue(self.tern.running(), "tern exited on a bad reload")
            self.assertEqual(self.presented(), fa, "the old certificate stays after a failed reload")
            self.assertEqual(self.count(RELOAD_OK), 0, lines)
            self.assertReply(c1.cmd("NOOP"), 250, "2.0.0")
        # a good pair afterwards is taken
        self.install(*self.b)
        self.hup()
        self.wait_log(RELOAD_OK, what="reload after fixing the pair")
        self.assertEqual(self.presented(), fb)


# --------------------------------------------------------------------------
# configuration

class TlsConfig(TlsCase):
    NEEDS_TERN = False

    @classmethod
    def tern_config(cls):
        return {}

    def check_config(self, t):
        env = t.env()
        p = subprocess.run([harness.tern_bin(), "check-config", "-c", t.conf], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        out = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
        for pat in harness.SANITIZER_PATTERNS:
            self.assertNotIn(pat, out)
        return p.returncode, out

    def make_tern(self, **kw):
        t = harness.Tern(**kw)
        self.addCleanup(t.cleanup)
        return t

    def test_serve_refuses_mismatched_key(self):
        reason = harness.root_users_missing_reason()
        if reason:
            self.skipTest(reason)
        cert, _ = self.pki.issue(HOSTNAME)
        _, other_key = self.pki.issue(HOSTNAME)
        t = self.make_tern(options={"tls_certificate": cert, "tls_key": other_key})
        try:
            t.start()
        except harness.TernStartError as e:
            msg = str(e)
            m = re.search(r"exited with status (-?\d+)", msg)
            self.assertTrue(m, msg)
            self.assertNotEqual(int(m.group(1)), 0, msg)
            self.assertIn("tls_certificate/tls_key", t.stderr_text(), t.stderr_text())
            for pat in harness.SANITIZER_PATTERNS:
                self.assertNotIn(pat, t.stderr_text())
        else:
            self.fail("tern serve started with a key that does not match its certificate")

    def test_check_config_certificate_without_key(self):
        t = self.make_tern(options={"tls_certificate": self.pki.ca_cert})
        rc, out = self.check_config(t)
        self.assertNotEqual(rc, 0, "check-config accepted tls_certificate without tls_key:\n%s" % out)
        self.assertIn("tls_key", out)

    def test_check_config_listener_tls_modes(self):
        cert, key = self.pki.issue(HOSTNAME)
        ports = [harness.free_port() for _ in range(3)]
        extra = "".join("listen 127.0.0.1:%d {\n    tls %s\n}\n" % (p, mode)
                        for p, mode in zip(ports, ("none", "starttls", "implicit")))
        t = self.make_tern(options={"tls_certificate": cert, "tls_key": key}, extra_config=extra)
        rc, out = self.check_config(t)
        self.assertEqual(rc, 0, "listen { tls none|starttls|implicit } refused:\n%s" % out)
        t2 = self.make_tern(options={"tls_certificate": cert, "tls_key": key},
                       extra_config="listen 127.0.0.1:%d {\n    tls bogus\n}\n" % harness.free_port())
        rc, out = self.check_config(t2)
        self.assertNotEqual(rc, 0, "'tls bogus' accepted:\n%s" % out)
        self.assertRegex(out, r"(?m)^%s:\d+: \S" % re.escape(t2.conf), out)


if __name__ == "__main__":
    unittest.main()
