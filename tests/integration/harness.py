"""
harness.py - start and drive a real tern for the integration tests.

A Tern object owns one temporary directory (config, users and aliases files,
spool, Maildirs, stderr capture), one tern process group and its listening
ports. It starts `$TERN_BIN serve -c CONF` in a new session (so the whole
group can be SIGKILLed by its pgid, which is ours), waits until every
listener answers with a 220 greeting, and stops the process by PID: SIGTERM,
then SIGKILL after a timeout. Every started PID is also recorded in
$TERN_TEST_PIDDIR (when tests/run.py sets it) so the runner can kill
leftovers of a worker it had to abort.

SMTPClient is a raw-socket client whose read_reply() reads a full multi-line
reply and checks, for every reply the suite sees, the RFC 2034 section 4
rules: every line of a 2xx/4xx/5xx reply other than the greeting and the
answer to HELO/EHLO starts with the same enhanced status code (RFC 3463),
whose class matches the reply's first digit; and every reply line fits in
512 octets (RFC 5321 4.5.3.1.5). CheckedSMTP does the same for smtplib.

TernTestCase starts one tern per test class (class attribute TERN_OPTIONS
selects the config), skips every test cleanly when the binary is missing, and
fails a test whose tern stderr shows a sanitizer report.

Only loopback is used; only processes started here are signalled.
"""

import atexit
import email.utils
import grp
import os
import pwd
import random
import re
import select
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOSTNAME = "mx.test.example"
DOMAIN = "example.test"
DOMAIN2 = "second.test"
IS_ROOT = os.geteuid() == 0
SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
QUEUED_RE = re.compile(r"queued as ([0-9A-Fa-f]{16})\b")
ENH_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
DEFAULT_TIMEOUT = 30.0   # socket timeout; generous for the ASan build on a busy box
# Upper bound of a wait for something tern does (a delivery, a log line).
# Waits poll and return as soon as it happened, so only a failure waits
# this long; generous, since the machines are shared and the ASan build slow.
WAIT = 90.0
COMMITTED_RE = re.compile(r"\bqueue id=([0-9a-f]{16}) event=committed\b")
QUEUED_LOG_RE = re.compile(r"\bevent=queued id=([0-9a-f]{16})\b")
SETTLED_RE = re.compile(r"\bqueue id=([0-9a-f]{16}) event=(removed|deferred)\b")

# Local users of the default test domain. alice, bob and postmaster are
# inline mailboxes; the rest come from the users file. Tests that count
# messages take a fresh user from the u00..u99 pool (Tern.fresh_user()).
INLINE_MAILBOXES = ["postmaster", "alice", "bob"]
FILE_USERS = ["carol", "dave", "erin", "frank"] + ["u%02d" % i for i in range(100)]
ALIASES = {
    "team": ["alice", "bob"],
    "everyone": ["team", "carol"],       # nested alias
    "alice-ext": ["alice@" + DOMAIN],    # user@localdomain target form
}


def tern_bin():
    b = os.environ.get("TERN_BIN") or os.path.join(REPO, "build", "tern")
    if not os.path.isabs(b):
        b = os.path.join(REPO, b)
    return b


def binary_missing_reason():
    b = tern_bin()
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        return "tern binary not built yet: %s" % os.path.relpath(b, REPO)
    return None


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def root_users_missing_reason():
    """As root tern drops to tern/tern-smtp; `make deps` creates them."""
    if IS_ROOT:
        missing = [u for u in ("tern", "tern-smtp") if not user_exists(u)]
        if missing:
            return "running as root but system users %s are missing (run make deps)" % ", ".join(missing)
    return None


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_is_free(port, host="127.0.0.1", kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def crlf_to_lf(b):
    return b.replace(b"\r\n", b"\n")


def token(prefix="tok"):
    return "%s-%d-%08x" % (prefix, os.getpid(), random.getrandbits(32))


NOTES = []


def note(text):
    """Report text with the current test's result line (tests/run.py
    prints it indented below, also when the test passes): a measurement
    worth seeing that is not (yet) a pass/fail criterion."""
    NOTES.append(text)


def _poll_pause(pause):
    """Sleep between two polls of the log, starting short and growing to
    0.5 s: a big log is parsed again at each poll."""
    pause = min(0.5, max(0.02, pause * 1.5))
    time.sleep(pause)
    return pause


def queue_id(text):
    m = QUEUED_RE.search(text)
    return m.group(1) if m else None


# --------------------------------------------------------------------------
# process helpers (all by PID; never by name)

def _proc_stat(pid):
    """(state, ppid, pgrp, starttime) of pid, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("latin-1")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data[data.rfind(")") + 2:].split()
    # fields after comm: state(3) ppid(4) pgrp(5) ... starttime(22)
    return rest[0], int(rest[1]), int(rest[2]), int(rest[19])


def pid_alive(pid, starttime=None):
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[3] == starttime


def proc_children(pid):
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except (FileNotFoundError, ProcessLookupError):
        return out
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out.extend(int(x) for x in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def proc_descendants(pid):
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in proc_children(p):
            if c not in seen:
                seen.append(c)
                todo.append(c)
    return seen


def group_members(pgid):
    """Live (non-zombie) processes whose process group is pgid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _proc_stat(int(name))
        if st and st[2] == pgid and st[0] not in ("Z", "X"):
            out.append(int(name))
    return out


def proc_status(pid):
    """Dict of /proc/PID/status fields (Uid, Gid, Groups, ...)."""
    d = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            d[k] = v.strip()
    return d


def _piddir():
    return os.environ.get("TERN_TEST_PIDDIR")


def _record_pid(pid, pgid, kind="tern"):
    d = _piddir()
    if not d:
        return
    st = _proc_stat(pid)
    try:
        with open(os.path.join(d, str(pid)), "w") as f:
            f.write("%d %d %d %s\n" % (pid, pgid, st[3] if st else 0, kind))
    except OSError:
        pass


def _unrecord_pid(pid):
    d = _piddir()
    if d:
        try:
            os.unlink(os.path.join(d, str(pid)))
        except OSError:
            pass


def _signal_pid(pid, sig, starttime=None):
    if starttime is not None and not pid_alive(pid, starttime):
        return
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------
# replies

def read_spool(spool):
    """Live messages of a format-2 spool: scan seg/*.seg in number order,
    each up to its first record that is not whole (magic, length, type,
    CRC-32 of header bytes 0-11 and 16-23 and the payload, zero padding);
    MSG places a message, DONE forgets it."""
    live = {}
    segdir = os.path.join(spool, "seg")
    try:
        names = sorted(n for n in os.listdir(segdir) if n.endswith(".seg"))
    except OSError:
        return {}
    for name in names:
        try:
            with open(os.path.join(segdir, name), "rb") as f:
                data = f.read()
        except OSError:
            continue
        off = 0
        while off + 24 <= len(data):
            magic, plen, typ = struct.unpack_from("<IIB", data, off)
            (crc,) = struct.unpack_from("<I", data, off + 12)
            (qid,) = struct.unpack_from("<Q", data, off + 16)
            size = (24 + plen + 7) & ~7
            if magic != 0x31635254 or off + size > len(data):
                break
            payload = data[off + 24:off + 24 + plen]
            c = zlib.crc32(payload, zlib.crc32(data[off + 16:off + 24], zlib.crc32(data[off:off + 12])))
            if c != crc:
                break
            key = "%016x" % qid
            if typ == 2:
                live[key] = payload
            elif typ == 5:
                live.pop(key, None)
            off += size
    out = {}
    for key, payload in live.items():
        flags = struct.unpack_from("<Q", payload, 8)[0] if len(payload) >= 16 else 0
        data = payload[16:]
        if flags & 1:
            try:
                with open(os.path.join(spool, "big", key), "rb") as f:
                    data += f.read()
            except OSError:
                pass
        out[key] = data
    return out


class ProtocolError(AssertionError):
    pass


class ConnectionClosed(ProtocolError):
    pass


class Reply:
    def __init__(self, code, lines, raw):
        self.code = code          # int
        self.lines = lines        # text after "ddd-"/"ddd " on each line
        self.raw = raw            # list of raw lines (bytes, no CRLF)

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enh(self):
        m = ENH_RE.match(self.lines[0]) if self.lines else None
        return "%s.%s.%s" % m.groups() if m else None

    def __repr__(self):
        return "<Reply %s>" % " | ".join(r.decode("utf-8", "replace") for r in self.raw)

    __str__ = __repr__


def check_enhanced(reply, context=""):
    """RFC 2034 section 4 and RFC 5321 4.5.3.1.5 for one reply."""
    for r in reply.raw:
        if len(r) + 2 > 512:
            raise ProtocolError("reply line longer than 512 octets%s: %r" % (context, r[:80]))
    first = str(reply.code)[0]
    if first not in "245":
        return
    codes = []
    for line in reply.lines:
        m = ENH_RE.match(line)
        if not m:
            raise ProtocolError("reply without RFC 3463 enhanced status code%s: %r" % (context, reply))
        codes.append(m.groups())
    if codes[0][0] != first:
        raise ProtocolError("enhanced code class %s does not match reply %d%s: %r"
                            % (codes[0][0], reply.code, context, reply))
    if any(c != codes[0] for c in codes):
        raise ProtocolError("lines of one reply carry different enhanced codes%s: %r" % (context, reply))


def parse_reply_lines(raw_lines):
    """Build a Reply from raw lines (bytes), validating the reply grammar."""
    code, lines = None, []
    for i, raw in enumerate(raw_lines):
        m = re.match(rb"^(\d{3})([ -]|$)(.*)$", raw, re.S)
        if not m:
            raise ProtocolError("malformed reply line: %r" % raw)
        c = int(m.group(1))
        if code is None:
            code = c
        elif c != code:
            raise ProtocolError("multi-line reply changes code: %r" % raw_lines)
        last = m.group(2) != b"-"
        if last != (i == len(raw_lines) - 1):
            raise ProtocolError("bad continuation in reply: %r" % raw_lines)
        lines.append(m.group(3).decode("utf-8", "replace"))
    return Reply(code, lines, list(raw_lines))


class SMTPClient:
    """A raw SMTP client over one TCP connection (bytes in, Reply out)."""

    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT, source=None):
        self.sock = socket.create_connection(
            (host, port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.replies = []
        self.eof = False

    # -- io
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            raise ConnectionClosed("connection closed by server; pending %r" % self.buf[:200])
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionClosed("connection closed by server; pending %r" % self.buf[:200])
        self.buf += chunk

    def read_line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            if len(self.buf) > 65536:
                raise ProtocolError("reply line without CRLF: %r" % self.buf[:100])
            self._fill()

    def read_reply(self, check=True):
        raw = []
        while True:
            line = self.read_line()
            raw.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                break
            if len(raw) > 1000:
                raise ProtocolError("endless multi-line reply")
        r = parse_reply_lines(raw)
        if check:
            check_enhanced(r)
        self.replies.append(r)
        return r

    def cmd(self, line, check=True):
        self.send(line + ("\r\n" if isinstance(line, str) else b"\r\n"))
        return self.read_reply(check)

    # -- dialogue helpers
    def greeting(self):
        return self.read_reply(check=False)

    def ehlo(self, name="client.test"):
        r = self.cmd("EHLO " + name, check=False)
        if r.code == 250:
            self.ehlo_lines = r.lines
            self.extensions = {}
            for l in r.lines[1:]:
                kw, _, arg = l.partition(" ")
                self.extensions[kw.upper()] = arg
        return r

    def start(self, name="client.test"):
        """Read the greeting and say EHLO; both must succeed."""
        g = self.greeting()
        if g.code != 220:
            raise ProtocolError("no 220 greeting: %r" % g)
        r = self.ehlo(name)
        if r.code != 250:
            raise ProtocolError("EHLO refused: %r" % r)
        return self

    def expect(self, r, code, enh=None, what=""):
        if r.code != code or (enh is not None and r.enh != enh):
            raise AssertionError("%s: expected %d %s, got %r" % (what or "reply", code, enh or "", r))
        return r

    def send_message(self, sender, rcpts, body, params="", rcpt_params=""):
        """MAIL/RCPT/DATA/body; body is bytes with CRLF lines, dot-stuffed here.
        Returns the final Reply (after the terminating dot)."""
        self.expect(self.cmd("MAIL FROM:<%s>%s" % (sender, (" " + params) if params else "")), 250, what="MAIL")
        for rc in rcpts:
            self.expect(self.cmd("RCPT TO:<%s>%s" % (rc, (" " + rcpt_params) if rcpt_params else "")), 250, what="RCPT " + rc)
        self.expect(self.cmd("DATA"), 354, what="DATA")
        self.send(dot_stuff(body) + b".\r\n")
        return self.read_reply()

    def wait_closed(self, timeout=DEFAULT_TIMEOUT):
        """True once the server has closed (EOF or reset) within timeout.
        Replies arriving meanwhile are parsed into self.replies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eof:
                return True
            try:
                r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            except (OSError, ValueError):
                return True
            if not r:
                break
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                self.eof = True
                return True
            self.buf += chunk
        return self.eof

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def dot_stuff(body):
    """RFC 5321 4.5.2 transparency for a CRLF body; ensures a final CRLF."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    out = []
    for line in body.split(b"\r\n")[:-1]:
        out.append((b"." + line) if line.startswith(b".") else line)
    return b"".join(l + b"\r\n" for l in out)


def simple_body(tok, subject=None, extra=b""):
    subject = subject or tok
    return (("Message-ID: <%s@client.test>\r\nSubject: %s\r\nFrom: <sender@client.test>\r\n"
             "X-Tern-Test: %s\r\n\r\nbody of %s\r\n" % (tok, subject, tok, tok)).encode() + extra)


class CheckedSMTP(smtplib.SMTP):
    """smtplib.SMTP that checks every reply like SMTPClient.read_reply."""

    def __init__(self, *a, **kw):
        self._skip_next_check = True       # the greeting
        self.queue_ids = []
        kw.setdefault("local_hostname", "client.test")   # no FQDN lookups
        kw.setdefault("timeout", DEFAULT_TIMEOUT)
        super().__init__(*a, **kw)

    def connect(self, *a, **kw):
        self._skip_next_check = True
        return super().connect(*a, **kw)

    def ehlo(self, *a, **kw):
        self._skip_next_check = True
        return super().ehlo(*a, **kw)

    def helo(self, *a, **kw):
        self._skip_next_check = True
        return super().helo(*a, **kw)

    def data(self, msg):
        """smtplib's data(); the queue id of each accepted message is kept
        in self.queue_ids (sendmail() does not return it)."""
        code, text = super().data(msg)
        if code == 250:
            self.queue_ids.append(queue_id(text.decode("utf-8", "replace")))
        return code, text

    def getreply(self):
        code, msg = super().getreply()
        skip, self._skip_next_check = self._skip_next_check, False
        if not skip and code > 0:
            lines = [l.decode("utf-8", "replace") for l in msg.split(b"\n")]
            check_enhanced(Reply(code, lines, [b"%d %s" % (code, l.encode()) for l in lines]))
        return code, msg


# --------------------------------------------------------------------------
# the tern instance

_LIVE = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_live():
    with _LIVE_LOCK:
        live = list(_LIVE)
    for t in live:
        try:
            t.stop(timeout=5)
        except Exception:
            pass


atexit.register(_stop_all_live)


class TernStartError(AssertionError):
    pass


class Tern:
    """One tern configuration, directory and (re)startable process."""

    def __init__(self, options=None, domains=None, listeners=1, relay_networks="127.0.0.0/8",
                 run_as=None, log_file=True, extra_config=""):
        self.dir = tempfile.mkdtemp(prefix="tern-test-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "tern.conf")
        self.spool = os.path.join(self.dir, "spool")
        self.mail = os.path.join(self.dir, "mail")
        self.stderr_path = os.path.join(self.dir, "stderr.txt")
        self.stdout_path = os.path.join(self.dir, "stdout.txt")
        self.log_path = os.path.join(self.dir, "tern.log") if log_file else None
        self.nlisteners = listeners
        self.ports = [free_port() for _ in range(listeners)]
        self.relay_networks = relay_networks
        self.run_as = run_as
        self.extra_config = extra_config
        self.options = {
            "max_message_size": "1M",
            "max_recipients": "5",
            "max_connections": "50",
            "max_connections_per_ip": "10",
            "max_errors": "10",
            "timeout_command": "300s",
            "timeout_data": "180s",
            "bare_newline": "normalize",
        }
        self.options.update(options or {})
        if domains is None:
            domains = {
                DOMAIN: {"mailboxes": INLINE_MAILBOXES, "users": FILE_USERS, "aliases": ALIASES},
                DOMAIN2: {"mailboxes": ["info", "postmaster"]},
            }
        self.domains = domains
        self.proc = None
        self.pgid = None
        self.known_pids = {}        # pid -> starttime, for cleanup by PID
        self.traced = False         # self.proc is strace, tern its child (start_traced)
        self.stderr_offset = 0      # sanitizer check position
        self._fresh = 0
        self._user_pool = list(FILE_USERS[4:])
        self.write_config()

    @property
    def port(self):
        return self.ports[0]

    # -- configuration
    def config_text(self):
        o = self.options
        lines = ["# written by tests/integration/harness.py", "hostname %s" % HOSTNAME]
        lines += ["listen 127.0.0.1:%d" % p for p in self.ports]
        lines.append("spool %s" % self.spool)
        if self.relay_networks:
            lines.append("relay_networks %s" % self.relay_networks)
        for k, v in o.items():
            if v is not None:
                lines.append("%s %s" % (k, v))
        if self.log_path:
            lines.append("log_file %s" % self.log_path)
        lines.append("user_smtp tern-smtp")
        lines.append("user_queue tern")
        for name, d in self.domains.items():
            lines.append("domain %s {" % name)
            if d.get("mailboxes"):
                lines.append("    mailbox %s" % " ".join(d["mailboxes"]))
            if d.get("users"):
                p = os.path.join(self.dir, "users-%s" % name)
                with open(p, "w") as f:
                    f.write("".join(u + "\n" for u in d["users"]))
                os.chmod(p, 0o644)
                lines.append("    users %s" % p)
            if d.get("aliases"):
                p = os.path.join(self.dir, "aliases-%s" % name)
                with open(p, "w") as f:
                    for a, targets in d["aliases"].items():
                        f.write("%s: %s\n" % (a, ", ".join(targets)))
                os.chmod(p, 0o644)
                lines.append("    aliases %s" % p)
            lines.append("    maildir %s/%%d/%%u" % self.mail)
            lines.append("}")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def write_config(self):
        with open(self.conf, "w") as f:
            f.write(self.config_text())
        os.chmod(self.conf, 0o644)
        self._prepare_ownership()

    def _prepare_ownership(self):
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            for root, dirs, files in os.walk(self.dir):
                for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                    os.chown(n, pw.pw_uid, pw.pw_gid)
        elif IS_ROOT and user_exists("tern"):
            # The queue process (user tern) creates the Maildirs below mail/,
            # as a mail administrator would arrange; the spool tern makes itself.
            os.makedirs(self.mail, exist_ok=True)
            pw = pwd.getpwnam("tern")
            os.chown(self.mail, pw.pw_uid, pw.pw_gid)
            os.chmod(self.mail, 0o755)

    # -- process control
    def command(self, *args):
        cmd = [tern_bin()] + list(args)
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            gname = grp.getgrgid(pw.pw_gid).gr_name
            cmd = ["setpriv", "--reuid=%s" % self.run_as, "--regid=%s" % gname, "--clear-groups"] + cmd
        return cmd

    def env(self):
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        return env

    def start(self, timeout=WAIT, wait=True):
        assert self.proc is None, "already running"
        attempts = 3
        for attempt in range(attempts):
            self.stderr_offset_at_start = self._stderr_size()
            with open(self.stderr_path, "ab") as ef, open(self.stdout_path, "ab") as of:
                self.proc = subprocess.Popen(
                    self.command("serve", "-c", self.conf), cwd=self.dir,
                    stdin=subprocess.DEVNULL, stdout=of, stderr=ef,
                    start_new_session=True, env=self.env())
            self.pgid = self.proc.pid
            st = _proc_stat(self.proc.pid)
            self.known_pids[self.proc.pid] = st[3] if st else None
            _record_pid(self.proc.pid, self.pgid)
            with _LIVE_LOCK:
                _LIVE.add(self)
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
                return self
            except TernStartError:
                err = self.stderr_text()[self.stderr_offset_at_start:]
                self.stop(timeout=5)
                if attempt + 1 < attempts and "in use" in err.lower():
                    # Lost a race for a free port with another worker: pick again.
                    self.ports = [free_port() for _ in range(self.nlisteners)]
                    self.write_config()
                    continue
                raise

    def wait_ready(self, timeout=WAIT):
        """Poll until every listener greets with 220 (or tern exits)."""
        deadline = time.monotonic() + timeout
        for port in self.ports:
            last = None
            while True:
                if self.proc.poll() is not None:
                    raise TernStartError("tern exited with status %s during start-up; stderr:\n%s"
                                         % (self.proc.returncode, self.stderr_tail()))
                if time.monotonic() > deadline:
                    raise TernStartError("tern did not greet on 127.0.0.1:%d within %.0fs (last: %s); stderr:\n%s"
                                         % (port, timeout, last, self.stderr_tail()))
                try:
                    with SMTPClient(port, timeout=5) as c:
                        g = c.greeting()
                        if g.code == 220:
                            try:
                                c.cmd("QUIT")
                            except (ProtocolError, OSError):
                                pass
                            break
                        last = repr(g)
                except (OSError, ProtocolError) as e:
                    last = repr(e)
                time.sleep(0.1)
        self.snapshot_pids()
        return self

    def health_check(self, timeout=DEFAULT_TIMEOUT):
        """None if a new connection gets a 220 within timeout (421s from
        connection limits still counting closed sessions are retried), else
        what went wrong."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with SMTPClient(self.port, timeout=max(1.0, deadline - time.monotonic())) as c:
                    g = c.greeting()
                    if g.code == 220:
                        try:
                            c.cmd("QUIT")
                        except (ProtocolError, OSError):
                            pass
                        return None
                    last = repr(g)
            except (OSError, ProtocolError) as e:
                last = repr(e)
            time.sleep(0.1)
        busy = []
        for p in self.snapshot_pids():
            st = _proc_stat(p)
            if st and st[0] == "R":
                busy.append(p)
        return "no 220 greeting within %.0fs (last: %s)%s" % (
            timeout, last, "; running (spinning?) pids %s" % busy if busy else "")

    def snapshot_pids(self):
        if self.proc is None:
            return []
        d = proc_descendants(self.proc.pid)
        for p in d:
            if p not in self.known_pids:
                st = _proc_stat(p)
                if st:
                    self.known_pids[p] = st[3]
        return d

    def children(self):
        """Current descendants of the parent process."""
        return self.snapshot_pids()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _wait_gone(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = [p for p, s in self.known_pids.items() if pid_alive(p, s)]
            if self.pgid is not None:
                alive += group_members(self.pgid)
            if not alive:
                return True
            time.sleep(0.05)
        return False

    def _kill_everything(self):
        if self.pgid is not None:
            _signal_group(self.pgid, signal.SIGKILL)
        for p, s in list(self.known_pids.items()):
            _signal_pid(p, signal.SIGKILL, s)

    def start_traced(self, trace, syscalls, strace_args=(), timeout=WAIT):
        """Start tern under `strace -f` (every process and thread), tracing
        syscalls into the file trace; strace_args add options (-ttt, -y,
        -s N). LeakSanitizer cannot run under ptrace, so the ASan build runs
        without it (the rest of ASan still does). stop() then stops tern,
        and strace exits with it."""
        strace = shutil.which("strace")
        if strace is None:
            raise AssertionError("strace is missing (make deps installs it)")
        orig_command, orig_env = self.command, self.env
        self.command = lambda *a: ([strace, "-f", "-qq", "-o", trace, "-e", "trace=" + ",".join(syscalls)]
                                   + list(strace_args) + orig_command(*a))
        self.env = lambda: dict(orig_env(), ASAN_OPTIONS="detect_leaks=0:abort_on_error=0")
        try:
            self.start(timeout)
            self.traced = True
        finally:
            self.command, self.env = orig_command, orig_env
        return self

    def stop(self, timeout=30.0):
        """SIGTERM the parent by PID; SIGKILL the group after timeout.
        Returns the parent's exit status (None if it was not running)."""
        if self.proc is None:
            return None
        self.snapshot_pids()
        rc = self.proc.poll()
        if rc is None and self.traced:
            # strace detaches on SIGTERM and leaves tern running: signal
            # tern itself (strace's child); strace exits when tern has.
            for k in proc_children(self.proc.pid):
                _signal_pid(k, signal.SIGTERM, self.known_pids.get(k))
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if rc is None:
            _signal_pid(self.proc.pid, signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_everything()
                rc = self.proc.wait()
        self.orphans_after_stop = []
        if not self._wait_gone(10.0):
            self.orphans_after_stop = [p for p, s in self.known_pids.items() if pid_alive(p, s)]
            self._kill_everything()
            self._wait_gone(5.0)
        self._forget()
        return rc

    def kill_group(self):
        """SIGKILL the whole tern process group (and any descendant by PID)."""
        if self.proc is None:
            return
        self.snapshot_pids()
        self._kill_everything()
        self.proc.wait()
        self._wait_gone(10.0)
        self._forget()

    def _forget(self):
        if self.proc is not None:
            _unrecord_pid(self.proc.pid)
        self.proc = None
        self.known_pids = {}
        self.traced = False
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def restart(self, timeout=WAIT):
        self.stop()
        return self.start(timeout)

    def cleanup(self):
        self.stop()
        if os.environ.get("TERN_TEST_KEEP"):
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- output
    def _stderr_size(self):
        try:
            return os.path.getsize(self.stderr_path)
        except OSError:
            return 0

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n=40):
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def log_text(self):
        """The log file if configured and present, else stderr."""
        if self.log_path and os.path.exists(self.log_path):
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        return self.stderr_text()

    def sanitizer_report(self, consume=True):
        """Sanitizer output in stderr since the last check, or None."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self.stderr_offset)
                raw = f.read()
        except FileNotFoundError:
            return None
        if consume:
            self.stderr_offset += len(raw)
        new = raw.decode("utf-8", "replace")
        for pat in SANITIZER_PATTERNS:
            i = new.find(pat)
            if i >= 0:
                start = new.rfind("\n", 0, max(0, i - 200))
                return new[max(0, start):i + 3000]
        return None

    # -- clients
    def client(self, port=None, source=None, timeout=DEFAULT_TIMEOUT):
        return SMTPClient(port or self.port, timeout=timeout, source=source)

    def session(self, name="client.test", port=None, source=None, busy_timeout=15.0):
        """A client that has read the greeting and said EHLO. A 421 greeting
        (connection limits still counting a session that just closed) is
        retried for up to busy_timeout seconds."""
        deadline = time.monotonic() + busy_timeout
        while True:
            c = self.client(port, source)
            try:
                g = c.greeting()
            except Exception:
                c.close()
                raise
            if g.code == 421 and time.monotonic() < deadline:
                c.close()
                time.sleep(0.1)
                continue
            if g.code != 220:
                c.close()
                raise ProtocolError("no 220 greeting: %r" % g)
            r = c.ehlo(name)
            if r.code != 250:
                c.close()
                raise ProtocolError("EHLO refused: %r" % r)
            return c

    def smtp(self, port=None):
        return CheckedSMTP("127.0.0.1", port or self.port)

    def send(self, rcpts, body=None, sender="sender@client.test", tok=None, params="", rcpt_params=""):
        """Send one message in a fresh session; returns (token, queue id)."""
        tok = tok or token()
        body = body if body is not None else simple_body(tok)
        with self.session() as c:
            r = c.send_message(sender, rcpts, body, params, rcpt_params)
            c.expect(r, 250, "2.0.0", "end of data")
            qid = queue_id(r.text)
            if not qid:
                raise AssertionError("no 'queued as <16 hex>' in %r" % r)
            try:
                c.cmd("QUIT")
            except (ProtocolError, OSError):
                pass
        return tok, qid

    def fresh_user(self):
        """A local user (domain example.test) no other test of this instance uses."""
        if not self._user_pool:
            raise AssertionError("test user pool exhausted")
        return self._user_pool.pop(0)

    # -- mail
    def maildir_path(self, user, domain=DOMAIN):
        return os.path.join(self.mail, domain, user)

    def messages(self, user, domain=DOMAIN):
        """Contents (bytes) of every file in the user's Maildir new/ and cur/."""
        base = self.maildir_path(user, domain)
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(base, sub)
            try:
                names = sorted(os.listdir(d))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for n in names:
                if n.startswith("."):
                    continue
                try:
                    with open(os.path.join(d, n), "rb") as f:
                        out.append(f.read())
                except FileNotFoundError:
                    pass
        return out

    def all_mailboxes(self):
        """(domain, user) for every Maildir that exists under mail/."""
        out = []
        if not os.path.isdir(self.mail):
            return out
        for dom in sorted(os.listdir(self.mail)):
            dd = os.path.join(self.mail, dom)
            if os.path.isdir(dd):
                for u in sorted(os.listdir(dd)):
                    out.append((dom, u))
        return out

    def wait_for_mail(self, user, n=1, timeout=WAIT, domain=DOMAIN, exact=False):
        """Wait until user has at least n messages; with exact, wait until
        tern has settled every message (wait_settled) and require exactly n.
        Returns the messages."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages(user, domain)
            if len(msgs) >= n:
                break
            if time.monotonic() > deadline:
                raise AssertionError("%s@%s has %d message(s) after %.0fs, expected %d; stderr tail:\n%s"
                                     % (user, domain, len(msgs), timeout, n, self.stderr_tail(15)))
            time.sleep(0.05)
        if exact:
            self.wait_settled(timeout=timeout)
            msgs = self.messages(user, domain)
            if len(msgs) != n:
                raise AssertionError("%s@%s has %d messages, expected exactly %d" % (user, domain, len(msgs), n))
        return msgs

    def wait_for_token(self, tok, user, domain=DOMAIN, timeout=WAIT):
        """The one message in user's Maildir that contains tok."""
        deadline = time.monotonic() + timeout
        b = tok.encode()
        while True:
            found = [m for m in self.messages(user, domain) if b in m]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError("message %s never reached %s@%s; stderr tail:\n%s"
                                     % (tok, user, domain, self.stderr_tail(15)))
            time.sleep(0.05)

    # -- log events
    def log_lines(self, *needles):
        """Log lines that contain every one of needles."""
        return [l for l in self.log_text().splitlines() if all(n in l for n in needles)]

    def wait_log(self, *needles, n=1, timeout=WAIT):
        """Wait until at least n log lines contain every one of needles;
        returns them."""
        deadline = time.monotonic() + timeout
        pause = 0
        while True:
            lines = self.log_lines(*needles)
            if len(lines) >= n:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError("%d log line(s) with %r after %.0fs, expected %d; log tail:\n%s"
                                     % (len(lines), needles, timeout, n,
                                        "\n".join(self.log_text().splitlines()[-15:])))
            pause = _poll_pause(pause)

    def unsettled(self, qids=None, removed_only=False):
        """Which of qids (default: every message tern acknowledged, by the
        log's committed and queued lines) tern has not finished with yet:
        finished is removed (every recipient delivered or failed) or, unless
        removed_only, deferred (waiting for a retry)."""
        text = self.log_text()
        if qids is None:
            qids = set(COMMITTED_RE.findall(text)) | set(QUEUED_LOG_RE.findall(text))
        settled = set(m.group(1) for m in SETTLED_RE.finditer(text)
                      if m.group(2) == "removed" or not removed_only)
        return sorted(set(q.lower() for q in qids if q) - settled)

    def wait_settled(self, qids=None, timeout=WAIT, removed_only=False):
        """Wait until tern has finished with the messages (unsettled()).
        After it, "exactly n copies" or "no mail" is checked without a race
        and without a guessed sleep: nothing is left that could still
        arrive (with removed_only, not even a retry)."""
        deadline = time.monotonic() + timeout
        pause = 0
        while True:
            left = self.unsettled(qids, removed_only)
            if not left:
                return
            if time.monotonic() > deadline:
                raise AssertionError("tern did not finish with %s within %.0fs; log lines:\n%s"
                                     % (left, timeout, "\n".join(l for l in self.log_text().splitlines()
                                                                  if any(q in l for q in left))[-3000:]))
            pause = _poll_pause(pause)

    def find_token_anywhere(self, tok):
        b = tok.encode()
        return [(d, u) for d, u in self.all_mailboxes() if any(b in m for m in self.messages(u, d))]

    def spool_files(self, sub=None):
        base = os.path.join(self.spool, sub) if sub else self.spool
        out = []
        for root, dirs, files in os.walk(base):
            out += [os.path.join(root, f) for f in files]
        return out

    def spool_messages(self):
        """The messages the spool holds, read from its segment log the way
        docs/spool-format.md describes it (independently of tern's code):
        {queue id: MSG payload, plus the big/ body if it has one}."""
        return read_spool(self.spool)

    def spool_files_containing(self, needle):
        """Queued messages whose bytes contain needle, as "seg/<id>"."""
        if isinstance(needle, str):
            needle = needle.encode()
        return ["seg/%s" % i for i, data in sorted(self.spool_messages().items())
                if needle in data]

    def wait_incoming_empty(self, timeout=WAIT):
        """spool/incoming holds no file (a missing directory counts as empty)."""
        deadline = time.monotonic() + timeout
        while True:
            files = self.spool_files("incoming")
            if not files:
                return
            if time.monotonic() > deadline:
                raise AssertionError("spool/incoming not empty: %r" % files)
            time.sleep(0.1)


# --------------------------------------------------------------------------
# unittest glue

class TernTestCase(unittest.TestCase):
    """One tern per class. Subclasses set TERN_OPTIONS (kwargs for Tern) or
    NEEDS_TERN = False. Tests skip cleanly if the binary is not built."""

    TERN_OPTIONS = {}
    NEEDS_TERN = True
    START = True
    tern = None
    _skip_reason = None
    _setup_error = None

    @classmethod
    def setUpClass(cls):
        cls.tern = None
        cls._setup_error = None
        cls._skip_reason = binary_missing_reason()
        if cls._skip_reason or not cls.NEEDS_TERN:
            return
        cls._skip_reason = root_users_missing_reason()
        if cls._skip_reason:
            return
        try:
            cls.tern = Tern(**cls.TERN_OPTIONS)
            if cls.START:
                cls.tern.start()
        except Exception as e:   # reported on every test of the class
            cls._setup_error = "tern failed to start: %s" % e

    @classmethod
    def tearDownClass(cls):
        t = cls.tern
        if t is None:
            return
        t.stop()
        report = t.sanitizer_report()
        if not report:
            t.cleanup()        # keep the directory for inspection otherwise
        cls.tern = None
        if report:
            raise AssertionError("sanitizer report in tern stderr (at shutdown, dir %s):\n%s" % (t.dir, report))

    def setUp(self):
        if self._skip_reason:
            self.skipTest(self._skip_reason)
        if self._setup_error:
            self.fail(self._setup_error)
        if self.tern is not None and self.START and not self.tern.running():
            # A previous test killed it (or it crashed): bring it back so one
            # failure does not cascade; the crash itself is reported there.
            self.tern.start()

    def tearDown(self):
        t = self.tern
        if t is None:
            return
        report = t.sanitizer_report()
        if report:
            self.fail("sanitizer report in tern stderr:\n%s" % report)
        if self.START and t.proc is not None and t.proc.poll() is not None:
            self.fail("tern exited (status %s) during the test; stderr tail:\n%s"
                      % (t.proc.returncode, t.stderr_tail()))
        if self.START and t.running():
            # tern must still greet after the test: a hang or a spinning worker
            # is charged to the test that caused it, and tern is restarted so
            # it does not cascade into the next tests.
            problem = t.health_check()
            if problem:
                tail = t.stderr_tail(20)
                try:
                    t.restart()
                except Exception as e:
                    problem += " (and the restart failed: %s)" % e
                self.fail("tern stopped answering after this test: %s\nstderr tail:\n%s" % (problem, tail))

    # convenience
    def assertReply(self, r, code, enh=None, msg=None):
        if r.code != code or (enh is not None and r.enh != enh):
            self.fail("%sexpected %d%s, got %r" % ((msg + ": ") if msg else "", code,
                                                   (" " + enh) if enh else "", r))
        return r

    def assertReplyIn(self, r, allowed, msg=None):
        """allowed: iterable of (code, enh-or-None)."""
        for code, enh in allowed:
            if r.code == code and (enh is None or r.enh == enh):
                return r
        self.fail("%sexpected one of %s, got %r" % ((msg + ": ") if msg else "", list(allowed), r))

    def assertNoMail(self, user, domain=DOMAIN, qids=None):
        """user got nothing, once tern has finished with qids (default:
        every message it acknowledged)."""
        self.tern.wait_settled(qids)
        msgs = self.tern.messages(user, domain)
        if msgs:
            self.fail("%s@%s got %d message(s), expected none; first:\n%r" % (user, domain, len(msgs), msgs[0][:500]))


def parse_date(s):
    return email.utils.parsedate_to_datetime(s.strip())
