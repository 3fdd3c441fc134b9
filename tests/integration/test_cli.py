"""
test_cli.py - the command line (issue 2, parts 2 and 3).

`tern version`; `tern check-config -c FILE` (exit 0 for a good file;
1 and one "FILE:LINE: reason" per error, all of them, for a bad one);
`tern serve` with a broken config exits 78 (EX_CONFIG); an unknown command
exits 64 (EX_USAGE) with the usage; several listeners in one config; `tern
serve` without -c runs the embedded default (127.0.0.1:2525, state under
./var, domain localhost with postmaster) and says where mail lands (only
if port 2525 is free).

Error paths check the exact exit status README.md documents and the
message, never only "non-zero": a sanitizer report exits non-zero too.
The sanitizers are told to exit with SANITIZER_EXIT, which no tern
command uses, and stderr must hold no report.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import DOMAIN, TernTestCase  # noqa: E402


SANITIZER_EXIT = 86


def run(args, cwd=None, timeout=60):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        env[var] += ":exitcode=%d" % SANITIZER_EXIT
    p = subprocess.run([harness.tern_bin()] + args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class Cli(TernTestCase):
    NEEDS_TERN = False

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="tern-cli-", dir="/tmp")
        os.chmod(self.dir, 0o755)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        super().tearDown()

    def assertClean(self, err):
        for pat in harness.SANITIZER_PATTERNS:
            self.assertNotIn(pat, err)

    def assertExit(self, got, want, what=""):
        """got: run()'s (rc, out, err); exactly status want, no sanitizer report."""
        code, out, err = got
        self.assertNotEqual(code, SANITIZER_EXIT, "%s: sanitizer exit:\n%s" % (what, err[-3000:]))
        self.assertEqual(code, want, "%s: exit status %s, want %d\n%s" % (what, code, want, (out + err)[-3000:]))
        self.assertClean(err)

    def write(self, name, text):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def test_version(self):
        rc, out, err = run(["version"])
        self.assertEqual(rc, 0, err)
        self.assertRegex(out + err, r"\d+\.\d+")
        self.assertClean(err)

    def test_unknown_command(self):
        for args in (["frobnicate"], ["serve", "extra"], ["check-config", "-x"], []):
            got = run(args)
            self.assertExit(got, 64, "tern %s" % " ".join(args))
            self.assertRegex(got[2], r"(?m)^usage: tern serve \[-c FILE\]$", args)

    def test_check_config_good(self):
        t = harness.Tern()
        try:
            rc, out, err = run(["check-config", "-c", t.conf])
            self.assertEqual(rc, 0, out + err)
            self.assertClean(err)
        finally:
            t.cleanup()

    def test_check_config_reports_every_error(self):
        spool = os.path.join(self.dir, "spool")
        text = "\n".join([
            "hostname mx.test.example",             # 1
            "listen 127.0.0.1:notaport",            # 2  bad port
            "spool %s" % spool,                     # 3
            "max_message_size banana",              # 4  bad size
            "frobnicate yes",                       # 5  unknown option
            "max_recipients -3",                    # 6  bad number
            "bare_newline sometimes",               # 7  bad enum
            "relay_networks 10.0.0.0/99",           # 8  bad CIDR
            "domain example.test {",                # 9
            "    mailbox alice",                    # 10
            "    bogus_key 1",                      # 11 unknown domain option
            "    maildir %s/mail/%%d/%%u" % self.dir,  # 12
            "}",                                    # 13
            "timeout_command forever",              # 14 bad duration
        ]) + "\n"
        p = self.write("bad.conf", text)
        got = run(["check-config", "-c", p])
        self.assertExit(got, 1, "check-config of a bad file")
        rc, out, err = got
        both = out + err
        for line in (2, 4, 5, 6, 7, 8, 11, 14):
            m = re.search(r"(?m)^%s:%d: (.+)$" % (re.escape(p), line), both)
            self.assertTrue(m, "no '%s:%d: reason' in:\n%s" % (p, line, both))
            self.assertTrue(m.group(1).strip(), "empty reason for line %d" % line)
        for line in (1, 3, 9, 10, 12, 13):
            self.assertNotRegex(both, r"(?m)^%s:%d: " % (re.escape(p), line), "good line %d reported" % line)
        self.assertClean(err)

    def test_check_config_unclosed_domain_and_missing_file(self):
        p = self.write("unclosed.conf", "spool %s/spool\ndomain example.test {\n    mailbox alice\n"
                       % self.dir)
        got = run(["check-config", "-c", p])
        self.assertExit(got, 1, "unclosed domain block")
        self.assertRegex(got[2], r"(?m)^%s:2: block 'domain example.test' is never closed" % re.escape(p))
        missing = os.path.join(self.dir, "nonexistent.conf")
        got = run(["check-config", "-c", missing])
        self.assertExit(got, 1, "missing configuration file")
        self.assertRegex(got[2], r"(?m)^%s: cannot read: No such file or directory$" % re.escape(missing))

    def test_check_config_missing_users_file(self):
        p = self.write("users.conf", "spool %s/spool\ndomain example.test {\n    users %s/no-such-users\n"
                       "    maildir %s/mail/%%d/%%u\n}\n" % (self.dir, self.dir, self.dir))
        got = run(["check-config", "-c", p])
        # docs/configuration.md: a missing users file is only a warning
        self.assertExit(got, 0, "missing users file")
        self.assertRegex(got[2], r"%s:3: users file %s/no-such-users does not exist"
                         % (re.escape(p), re.escape(self.dir)))
        self.assertIn("%s: configuration ok" % p, got[1])

    def test_serve_with_bad_config_fails(self):
        p = self.write("bad.conf", "listen 127.0.0.1:nope\nfrobnicate\n")
        got = run(["serve", "-c", p], timeout=60)
        self.assertExit(got, 78, "serve with a bad configuration (EX_CONFIG)")
        self.assertRegex(got[2], r"(?m)^%s:1: listen: '127.0.0.1:nope' is not an address:port" % re.escape(p))
        self.assertRegex(got[2], r"(?m)^%s:2: unknown option 'frobnicate'" % re.escape(p))

    def test_two_listeners(self):
        if harness.binary_missing_reason():
            self.skipTest(harness.binary_missing_reason())
        reason = harness.root_users_missing_reason()
        if reason:
            self.skipTest(reason)
        t = harness.Tern(listeners=2)
        try:
            t.start()
            toks = []
            for port in t.ports:
                with t.session(port=port) as c:
                    tok = harness.token("listener%d" % port)
                    toks.append(tok)
                    self.assertReply(c.send_message("sender@client.test", ["alice@" + DOMAIN],
                                                    harness.simple_body(tok)), 250, "2.0.0")
            for tok in toks:
                t.wait_for_token(tok, "alice")
            t.stop()
            self.assertIsNone(t.sanitizer_report())
        finally:
            t.cleanup()

    def test_default_config(self):
        if not harness.port_is_free(2525):
            if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip") \
                    and not os.environ.get("TERN_IN_NETNS"):
                return self._default_config_in_netns()
            self.skipTest("port 2525 is in use")
        reason = harness.root_users_missing_reason()
        if reason:
            self.skipTest(reason)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        errf = open(os.path.join(self.dir, "stderr.txt"), "wb")
        outf = open(os.path.join(self.dir, "stdout.txt"), "wb")
        proc = subprocess.Popen([harness.tern_bin(), "serve"], cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                                stdout=outf, stderr=errf, start_new_session=True)
        harness._record_pid(proc.pid, proc.pid)
        try:
            deadline = time.monotonic() + harness.WAIT
            while True:
                self.assertIsNone(proc.poll(), "tern serve exited: %s" % open(errf.name).read()[-2000:])
                try:
                    c = harness.SMTPClient(2525, timeout=5)
                    g = c.greeting()
                    if g.code == 220:
                        break
                    c.close()
                except (OSError, harness.ProtocolError):
                    pass
                self.assertLess(time.monotonic(), deadline, "no greeting on 127.0.0.1:2525")
                time.sleep(0.1)
            with c:
                c.ehlo()
                tok = harness.token("default")
                self.assertReply(c.send_message("sender@client.test", ["postmaster@localhost"],
                                                harness.simple_body(tok)), 250, "2.0.0")
                self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250, "2.1.0")
                self.assertReply(c.cmd("RCPT TO:<nosuchuser@localhost>"), 550, "5.1.1")
                self.assertReply(c.cmd("RCPT TO:<someone@other.test>"), 250, "2.1.5")   # 127/8 may relay
            box = os.path.join(self.dir, "var", "mail", "localhost", "postmaster")
            deadline = time.monotonic() + harness.WAIT
            found = False
            while not found and time.monotonic() < deadline:
                for sub in ("new", "cur"):
                    d = os.path.join(box, sub)
                    for n in (os.listdir(d) if os.path.isdir(d) else []):
                        with open(os.path.join(d, n), "rb") as f:
                            found = found or tok.encode() in f.read()
                time.sleep(0.1)
            self.assertTrue(found, "message not in %s" % box)
            self.assertTrue(os.path.isdir(os.path.join(self.dir, "var", "spool")))
            outs = open(outf.name).read() + open(errf.name).read()
            self.assertIn("var/mail", outs, "tern does not say where delivered mail lands")
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            time.sleep(0.2)
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # any child left in our group
            except ProcessLookupError:
                pass
            harness._unrecord_pid(proc.pid)
            errf.close()
            outf.close()
        err = open(errf.name).read()
        self.assertClean(err)

    def _default_config_in_netns(self):
        """Port 2525 is taken here (someone's `make run`): run this same test
        in a network namespace of our own, whose loopback is free."""
        env = dict(os.environ)
        env["TERN_IN_NETNS"] = "1"
        env["TERN_BIN"] = harness.tern_bin()
        p = subprocess.run(["unshare", "--net", "--", "sh", "-c",
                            "ip link set lo up && exec /usr/bin/python3 -m unittest -v test_cli.Cli.test_default_config"],
                           cwd=os.path.dirname(os.path.abspath(__file__)), env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
        out = p.stdout.decode("utf-8", "replace")
        m = re.search(r"skipped '(.*)'", out)
        if p.returncode == 0 and m:
            self.skipTest("in a network namespace: " + m.group(1))
        self.assertEqual(p.returncode, 0, "test_default_config in a network namespace failed:\n" + out)
