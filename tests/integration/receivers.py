"""
receivers.py - the far side of outbound delivery (issue 3) for the
integration tests: receiving SMTP servers with scripted behaviour and a
private Postfix instance. The DNS server (dnsmasq) for the test domains and
the lock on a block of loopback addresses are in netfixtures.py.

Receiver
    One SMTP server on IP:25 (python3-aiosmtpd, run by /usr/bin/python3 in a
    subprocess of its own so that it can be stopped by PID). It appends one
    JSON line per event to a file the test reads: connect, every command
    (with its argument verbatim and whether more input was already waiting,
    i.e. the client pipelined), every RCPT reply, every accepted
    transaction (MAIL FROM with its parameters, RCPT TOs with theirs, the
    content exactly as on the wire and un-dot-stuffed), aborted DATA, and
    disconnect; each with a CLOCK_MONOTONIC time stamp, which is the same
    clock in every process, so that the connections of several receivers
    can be laid on one time line (concurrency limits).

    Behaviours (keyword arguments, combinable):
      pipelining, eightbitmime, smtputf8, dsn: which EHLO keywords to offer
          (ENHANCEDSTATUSCODES always; no STARTTLS, no CHUNKING);
      size: advertise SIZE n and refuse a larger MAIL ... SIZE= (552 5.3.4);
      rcpt_tempfail=K: 451 4.3.0 to the first K RCPT commands, then accept;
      rcpt_reject=True: 550 5.1.1 to every RCPT;
      rcpt_rules={"prefix": (code, enh, text), ...}: per local-part prefix,
          with an optional count: (code, enh, text, K) answers so only the
          first K times for that recipient, then accepts;
      data_tempfail=K: 451 4.3.0 to the first K ends of data, then accept;
      close_in_data=K: close the connection in the middle of the first K
          DATA contents (after the first content line), then accept;
      stall_greeting=(seconds, K) / stall_dot=(seconds, K): the first K
          times, say nothing for that long at the greeting / after the
          final dot, then close without a reply;
      reply_delay=seconds: wait that long before answering the final dot;
      greeting="421 4.3.2 text": greet with that reply and close;
      ehlo_reject=True: 502 5.5.1 to EHLO (HELO works, without extensions);
      tls={"cert": PEM path, "key": PEM path}: offer STARTTLS (RFC 3207)
          with that certificate; each message event then says "tls" (the
          protocol version and cipher, or null in clear text). With
          "broken": True the handshake can only fail (TLS 1.0 only).
    A parameter the server did not offer (BODY=8BITMIME without 8BITMIME,
    SMTPUTF8, DSN's RET/ENVID/NOTIFY/ORCPT) is refused with 555 5.5.4, like a
    strict server; a non-ASCII argument without SMTPUTF8 gets 500.

Receiver, PrivatePostfix: started and stopped by PID, like tern itself
(recorded in $TERN_TEST_PIDDIR so tests/run.py can kill leftovers). Only
loopback is ever used.

This file is also the receiver program: `python3 receivers.py serve CONF`.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

PY = "/usr/bin/python3"
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
HERE = os.path.dirname(os.path.abspath(__file__))

sys.path.insert(0, HERE)
from netfixtures import spawn, stop_popen  # noqa: E402


# --------------------------------------------------------------------------
# helpers shared by both sides

def _b2s(b):
    """bytes -> JSON-safe str, losslessly (latin-1)."""
    return bytes(b).decode("latin-1")


def _s2b(s):
    return s.encode("latin-1")


def unstuff(raw):
    """RFC 5321 4.5.2: remove the leading dot of each CRLF line that has one."""
    parts = bytes(raw).split(b"\r\n")
    return b"\r\n".join(p[1:] if p.startswith(b".") else p for p in parts)


def dot_stuff(data):
    parts = data.split(b"\r\n")
    return b"\r\n".join((b"." + p) if p.startswith(b".") else p for p in parts)


def bare_line_ends(raw):
    """(bare LF count, bare CR count) in raw."""
    raw = bytes(raw)
    lf = sum(1 for i, c in enumerate(raw) if c == 0x0A and (i == 0 or raw[i - 1] != 0x0D))
    cr = sum(1 for i, c in enumerate(raw) if c == 0x0D and (i + 1 >= len(raw) or raw[i + 1] != 0x0A))
    return lf, cr


# --------------------------------------------------------------------------
# process helpers (by PID only)

def _harness():
    sys.path.insert(0, HERE)
    import harness
    return harness


def _record(pid, kind):
    h = _harness()
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
        pgid = int(data[data.rfind(")") + 2:].split()[2])
    except (OSError, ValueError, IndexError):
        pgid = pid
    h._record_pid(pid, pgid, kind)


def _unrecord(pid):
    _harness()._unrecord_pid(pid)


def aiosmtpd_missing_reason():
    if not os.access(PY, os.X_OK):
        return "%s missing" % PY
    r = subprocess.run([PY, "-c", "import aiosmtpd.smtp"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        return "python3-aiosmtpd not installed for %s" % PY
    return None


# --------------------------------------------------------------------------
# loopback ports

def tcp_port_in_use(ip, port=25):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        return s.connect_ex((ip, port)) == 0
    finally:
        s.close()


# --------------------------------------------------------------------------
# Receiver: the test side

class Transaction:
    def __init__(self, ev):
        self.conn = ev["conn"]
        self.n = ev["n"]
        self.t = ev["t"]
        self.mail_from = ev["mail_from"]
        self.mail_params = ev["mail_params"]
        self.rcpts = [r[0] for r in ev["rcpts"]]
        self.rcpt_params = dict((r[0], r[1]) for r in ev["rcpts"])
        self.raw = _s2b(ev["raw"])          # content as on the wire, without the final "."
        self.data = _s2b(ev["data"])        # un-dot-stuffed
        self.bare_lf = ev["bare_lf"]
        self.bare_cr = ev["bare_cr"]
        self.reply = ev["reply"]
        self.tls = ev.get("tls")

    def param(self, name, rcpt=None):
        """Value of a MAIL (or RCPT, with rcpt) parameter, None if absent,
        True for a parameter without value. Names case-insensitive."""
        params = self.rcpt_params[rcpt] if rcpt is not None else self.mail_params
        for p in params:
            k, eq, v = p.partition("=")
            if k.upper() == name.upper():
                return v if eq else True
        return None

    def __repr__(self):
        return "<Transaction conn=%s from=<%s> %s rcpts=%s %d octets>" % (
            self.conn, self.mail_from, " ".join(self.mail_params), self.rcpts, len(self.data))


class Receiver:
    """An SMTP server on ip:port in its own process. Behaviours: see the
    module docstring."""

    def __init__(self, ip, workdir, name=None, port=25, hostname=None, **behaviour):
        self.ip = ip
        self.port = port
        self.name = name or ip
        self.hostname = hostname or "rcv-%s.test" % ip.replace(".", "-")
        self.dir = os.path.join(workdir, "rcv-%s-%d-%d" % (ip, port, int(time.monotonic() * 1000)))
        os.makedirs(self.dir)
        self.events_path = os.path.join(self.dir, "events.jsonl")
        self.ready_path = os.path.join(self.dir, "ready")
        self.err_path = os.path.join(self.dir, "stderr.txt")
        self.behaviour = {"pipelining": True, "eightbitmime": True, "smtputf8": True, "dsn": False,
                          "size": None}
        self.behaviour.update(behaviour)
        self.proc = None
        self._cache_size = -1
        self._cache = []

    # -- process
    def launch(self):
        conf = {"host": self.ip, "port": self.port, "hostname": self.hostname,
                "events": self.events_path, "ready": self.ready_path, "behaviour": self.behaviour}
        cpath = os.path.join(self.dir, "conf.json")
        with open(cpath, "w") as f:
            json.dump(conf, f)
        self.proc = spawn([PY, os.path.abspath(__file__), "serve", cpath], self.err_path,
                          "receiver", mode="ab", cwd=self.dir)
        return self

    def wait_ready(self, timeout=None):
        timeout = timeout or _harness().WAIT
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.ready_path):
            if self.proc.poll() is not None:
                raise AssertionError("receiver %s:%d exited (%s): %s"
                                     % (self.ip, self.port, self.proc.returncode, self.stderr_tail()))
            if time.monotonic() > deadline:
                raise AssertionError("receiver %s:%d not ready after %.0fs: %s"
                                     % (self.ip, self.port, timeout, self.stderr_tail()))
            time.sleep(0.02)
        return self

    def start(self):
        return self.launch().wait_ready()

    def stop(self):
        stop_popen(self.proc, 5.0)
        self.proc = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, n=20):
        try:
            with open(self.err_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- what it saw
    def events(self, kind=None):
        try:
            size = os.path.getsize(self.events_path)
        except OSError:
            return []
        if size != self._cache_size:
            out = []
            with open(self.events_path, "rb") as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass          # a line being written
            self._cache, self._cache_size = out, size
        return [e for e in self._cache if kind is None or e["ev"] == kind]

    def transactions(self, token=None):
        tx = [Transaction(e) for e in self.events("transaction")]
        if token is not None:
            b = token.encode() if isinstance(token, str) else token
            tx = [t for t in tx if b in t.data]
        return tx

    def commands(self, verb=None):
        return [e for e in self.events("cmd") if verb is None or e["verb"] == verb.upper()]

    def rcpt_replies(self, addr=None):
        """RCPT events: {"addr", "code", ...}; addr compared case-insensitively."""
        return [e for e in self.events("rcpt") if addr is None or e["addr"].lower() == addr.lower()]

    def connection_count(self):
        return len(self.events("connect"))

    def intervals(self):
        """[(start, end)] per connection: from accept until QUIT was read or
        the connection ended, whichever came first (None: still open)."""
        start, end = {}, {}
        for e in self.events():
            c = e.get("conn")
            if e["ev"] == "connect":
                start[c] = e["t"]
            elif e["ev"] == "cmd" and e["verb"] == "QUIT":
                end.setdefault(c, e["t"])
            elif e["ev"] == "disconnect":
                end.setdefault(c, e["t"])
        return [(start[c], end.get(c)) for c in start]

    def wait_transactions(self, n=1, token=None, timeout=None, what=""):
        timeout = timeout or _harness().WAIT
        deadline = time.monotonic() + timeout
        while True:
            tx = self.transactions(token)
            if len(tx) >= n:
                return tx
            if time.monotonic() > deadline:
                raise AssertionError("%s: receiver %s got %d transaction(s)%s after %.0fs, expected %d"
                                     % (what or "delivery", self.ip, len(tx),
                                        " with %s" % token if token else "", timeout, n))
            time.sleep(0.05)


def start_all(receivers):
    """Launch in parallel, then wait for each; stops them all on failure."""
    try:
        for r in receivers:
            r.launch()
        for r in receivers:
            r.wait_ready()
    except Exception:
        for r in receivers:
            r.stop()
        raise
    return receivers


def max_overlap(intervals, slack=0.0, now=None):
    """Most intervals open at one time. Each interval's end is moved
    `slack` seconds earlier first: the receiver notices a closed connection
    a little after the client has closed it and may accept the client's
    next connection in between; such an overlap is not a real one."""
    now = now if now is not None else time.monotonic()
    pts = []
    for s, e in intervals:
        e = now if e is None else max(s, e - slack)
        if e > s:
            pts.append((s, 1))
            pts.append((e, -1))
    pts.sort(key=lambda p: (p[0], p[1]))   # ends before starts at equal times
    cur = best = 0
    for _, d in pts:
        cur += d
        best = max(best, cur)
    return best


class SocketSampler:
    """Counts, from the kernel's table (/proc/net/tcp), the client sockets
    connected or connecting to port `port` of the addresses 127.0.N.x of a
    block, in a thread: the most open at once in all and per address. This
    is the client's own view of its connections (a socket counts until the
    client closes it), free of any delay in the receivers noticing a close:
    the right measure for a global limit that spans many receiver processes.

    One read of /proc/net/tcp is not a snapshot (the kernel walks its hash
    table while sockets come and go, so a socket closed and its successor
    opened during the walk can both be listed). Only sockets (by inode)
    listed by two reads in a row are counted: each was open from its line in
    the first read to its line in the second, so all of them were open
    together between the two reads. The count can miss a violation shorter
    than a read; it never invents one."""

    ESTABLISHED, SYN_SENT = "01", "02"

    def __init__(self, block_n, port=25, interval=0.002):
        self.suffix = "%02X007F" % block_n        # little-endian 127.0.N.x
        self.port = "%04X" % port
        self.interval = interval
        self.max_total = 0
        self.max_per = {}
        self.samples = 0
        self._stop = False
        import threading
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop = True
        self._thread.join(10)

    def read(self):
        """{inode: remote IP} of the matching sockets."""
        out = {}
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                rip, _, rport = fields[2].partition(":")
                if rport != self.port or not rip.endswith(self.suffix):
                    continue
                if fields[3] not in (self.ESTABLISHED, self.SYN_SENT) or fields[9] == "0":
                    continue
                out[fields[9]] = ".".join(str(int(rip[i:i + 2], 16)) for i in (6, 4, 2, 0))
        return out

    def _run(self):
        prev = {}
        while not self._stop:
            cur = self.read()
            both = [ip for inode, ip in cur.items() if inode in prev]
            prev = cur
            self.samples += 1
            self.max_total = max(self.max_total, len(both))
            per = {}
            for ip in both:
                per[ip] = per.get(ip, 0) + 1
            for ip, n in per.items():
                self.max_per[ip] = max(self.max_per.get(ip, 0), n)
            time.sleep(self.interval)


# --------------------------------------------------------------------------
# Postfix as a receiving MX (private instance; see bench/smtp-source.sh)

class PrivatePostfix:
    """Postfix listening on ip:25, final destination for `domain` (virtual
    Maildir delivery as nobody into <dir>/mail/<domain>/<user>/)."""

    def __init__(self, ip, domain, users, workdir):
        self.ip = ip
        self.domain = domain
        self.users = list(users)
        self.dir = os.path.join(workdir, "postfix-%d" % int(time.monotonic() * 1000))
        self.conf = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        self.mail = os.path.join(self.dir, "mail")
        self.log = os.path.join(self.dir, "postfix.log")
        self.started = False
        self.master_pid = None

    @staticmethod
    def missing_reason():
        if os.geteuid() != 0:
            return "a private Postfix instance needs root"
        if not (os.access(POSTFIX, os.X_OK) and os.access(POSTCONF, os.X_OK)):
            return "postfix not installed (Debian package postfix)"
        return None

    def _run(self, *args, check=True):
        p = subprocess.run(list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError("%s failed (%d): %s\nlog: %s" % (" ".join(args), p.returncode,
                                                                   p.stdout.decode(errors="replace"),
                                                                   self.log_tail()))
        return p

    def start(self):
        import pwd
        nobody = pwd.getpwnam("nobody")
        os.makedirs(self.conf)
        os.makedirs(self.queue)
        os.makedirs(self.mail)
        for d in (self.dir,):
            os.chmod(d, 0o755)
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        master_cf = "/etc/postfix/master.cf"
        if not os.access(master_cf, os.R_OK):
            master_cf = "/usr/share/postfix/master.cf.dist"
        shutil.copy(master_cf, os.path.join(self.conf, "master.cf"))
        with open(os.path.join(self.conf, "vmailbox"), "w") as f:
            for u in self.users:
                f.write("%s@%s %s/%s/\n" % (u, self.domain, self.domain, u))
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write("\n".join([
                "compatibility_level = 3.6",
                "queue_directory = %s" % self.queue,
                "data_directory = %s" % os.path.join(self.dir, "data"),
                "myhostname = postfix.%s" % self.domain,
                "mydomain = %s" % self.domain,
                "myorigin = %s" % self.domain,
                # must name a configured interface address (127.0.N.x is only
                # routed to lo); the smtpd service below binds self.ip itself
                "inet_interfaces = 127.0.0.1",
                "inet_protocols = ipv4",
                "mydestination =",
                "mynetworks = 127.0.0.0/8",
                "relayhost =",
                "alias_maps =",
                "alias_database =",
                # tern on 127.0.0.1 must not count as a local client whose
                # mail gets missing Date:/From:/Message-ID: added: the test
                # compares the message byte for byte
                "local_header_rewrite_clients =",
                "smtpd_recipient_restrictions = permit_mynetworks, reject",
                "smtpd_relay_restrictions = permit_mynetworks, reject",
                "virtual_mailbox_domains = %s" % self.domain,
                "virtual_mailbox_base = %s" % self.mail,
                "virtual_mailbox_maps = texthash:%s" % os.path.join(self.conf, "vmailbox"),
                "virtual_uid_maps = static:%d" % nobody.pw_uid,
                "virtual_gid_maps = static:%d" % nobody.pw_gid,
                "maillog_file = %s" % self.log,
                "maillog_file_prefixes = /var, /dev/stdout, %s/" % self.dir,
                "",
            ]))
        self._run(POSTCONF, "-c", self.conf, "-M", "-X", "smtp/inet")
        self._run(POSTCONF, "-c", self.conf, "-M",
                  "%s:25/inet=%s:25 inet n - n - - smtpd" % (self.ip, self.ip))
        self._run(POSTCONF, "-c", self.conf, "-F", "*/*/chroot = n")
        self._run(POSTFIX, "-c", self.conf, "check")
        self.started = True
        self._run(POSTFIX, "-c", self.conf, "start")
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        deadline = time.monotonic() + _harness().WAIT
        while time.monotonic() < deadline:
            try:
                with open(pidfile) as f:
                    self.master_pid = int(f.read().strip())
                    _record(self.master_pid, "postfix")
            except (OSError, ValueError):
                pass
            if self.master_pid and self._greets():
                return self
            time.sleep(0.1)
        raise AssertionError("Postfix did not greet on %s:25; log:\n%s" % (self.ip, self.log_tail()))

    def _greets(self):
        try:
            with socket.create_connection((self.ip, 25), timeout=2) as s:
                f = s.makefile("rb")
                if f.readline().startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    f.readline()
                    return True
        except OSError:
            pass
        return False

    def stop(self):
        if not self.started:
            return
        self.started = False
        kids = []
        if self.master_pid:
            try:
                with open("/proc/%d/task/%d/children" % (self.master_pid, self.master_pid)) as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                pass
        try:
            self._run(POSTFIX, "-c", self.conf, "stop", check=False)
        except subprocess.TimeoutExpired:
            pass
        pids = ([self.master_pid] if self.master_pid else []) + kids
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        for p in pids:
            if _alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.master_pid:
            _unrecord(self.master_pid)

    def messages(self, user):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.mail, self.domain, user, sub)
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            for n in names:
                try:
                    with open(os.path.join(d, n), "rb") as f:
                        out.append(f.read())
                except OSError:
                    pass
        return out

    def log_tail(self, n=30):
        try:
            with open(self.log, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
        return data[data.rfind(")") + 2:].split()[0] not in ("Z", "X")
    except OSError:
        return False


# --------------------------------------------------------------------------
# Receiver: the server side (runs in its own /usr/bin/python3 process)

def serve(conf_path):
    import asyncio
    import collections
    from aiosmtpd.smtp import SMTP

    with open(conf_path) as f:
        conf = json.load(f)
    b = conf["behaviour"]
    out = open(conf["events"], "a", buffering=1)
    counters = collections.Counter()
    state = {"active": 0, "conn": 0, "tx": 0}

    def emit(ev, **kw):
        kw["ev"] = ev
        kw["t"] = time.monotonic()
        out.write(json.dumps(kw) + "\n")

    def first_times(key, k):
        """True the first k times key is asked about."""
        counters[key] += 1
        return k and counters[key] <= k

    def arg_text(arg):
        if arg is None:
            return ""
        return arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    def parse_path(arg, keyword):
        """(address, [params]) or None; params verbatim."""
        if arg is None or not arg[:len(keyword)].upper() == keyword:
            return None
        rest = arg[len(keyword):].lstrip(" ")
        if not rest.startswith("<"):
            return None
        end = rest.find(">")
        if end < 0:
            return None
        return rest[1:end], rest[end + 1:].split()

    class Handler:
        pass

    tls_context = None
    if b.get("tls"):
        import ssl
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.load_cert_chain(b["tls"]["cert"], b["tls"]["key"])
        if b["tls"].get("broken"):
            # A TLS stack that cannot agree with anyone modern: TLS 1.0 only
            # (OpenSSL 3 refuses it at its default security level).
            tls_context.minimum_version = ssl.TLSVersion.TLSv1
            tls_context.maximum_version = ssl.TLSVersion.TLSv1

    class Receiver(SMTP):
        command_size_limit = 4096
        command_size_limits = collections.defaultdict(lambda: 4096)
        line_length_limit = 1 << 22          # the StreamReader's limit

        def __init__(self):
            super().__init__(Handler(), hostname=conf["hostname"], ident="tern-test-receiver",
                             enable_SMTPUTF8=bool(b.get("smtputf8")), decode_data=False,
                             data_size_limit=None, timeout=120, loop=loop,
                             tls_context=tls_context)
            self.conn_id = None

        # -- connection accounting
        def connection_made(self, transport):
            if self.conn_id is None:
                state["conn"] += 1
                state["active"] += 1
                self.conn_id = state["conn"]
                peer = transport.get_extra_info("peername")
                emit("connect", conn=self.conn_id, active=state["active"], peer=str(peer))
            super().connection_made(transport)

        def connection_lost(self, error):
            if self.conn_id is not None:
                state["active"] -= 1
                emit("disconnect", conn=self.conn_id, active=state["active"])
            super().connection_lost(error)

        async def _handle_client(self):
            st = b.get("stall_greeting")
            if st and first_times("stall_greeting", st[1]):
                emit("stall", conn=self.conn_id, stage="greeting", seconds=st[0])
                await asyncio.sleep(st[0])
                self.transport.close()
                return
            if b.get("greeting"):
                emit("greeting", conn=self.conn_id, reply=b["greeting"])
                await self.push(b["greeting"])
                self.transport.close()
                return
            await super()._handle_client()

        def note(self, verb, arg):
            pipelined = len(getattr(self._reader, "_buffer", b"")) > 0
            emit("cmd", conn=self.conn_id, verb=verb, arg=arg_text(arg), pipelined=pipelined)

        # -- commands
        async def smtp_EHLO(self, hostname):
            self.note("EHLO", hostname)
            if not hostname:
                await self.push("501 5.5.4 Syntax: EHLO hostname")
                return
            if b.get("ehlo_reject"):
                await self.push("502 5.5.1 receiver: EHLO not implemented")
                return
            self._set_rset_state()
            self.session.extended_smtp = True
            self.session.host_name = hostname
            lines = [conf["hostname"]]
            if b.get("pipelining"):
                lines.append("PIPELINING")
            if b.get("size"):
                lines.append("SIZE %d" % b["size"])
            if b.get("eightbitmime"):
                lines.append("8BITMIME")
            if b.get("smtputf8"):
                lines.append("SMTPUTF8")
            if b.get("dsn"):
                lines.append("DSN")
            if tls_context is not None and not self._tls_protocol:
                lines.append("STARTTLS")
            lines.append("ENHANCEDSTATUSCODES")
            lines.append("HELP")
            for i, l in enumerate(lines):
                await self.push("250%s%s" % ("-" if i + 1 < len(lines) else " ", l))

        async def smtp_HELO(self, hostname):
            self.note("HELO", hostname)
            await super().smtp_HELO(hostname)

        async def smtp_RSET(self, arg):
            self.note("RSET", arg)
            await super().smtp_RSET(arg)

        async def smtp_NOOP(self, arg):
            self.note("NOOP", arg)
            await super().smtp_NOOP(arg)

        async def smtp_QUIT(self, arg):
            self.note("QUIT", arg)
            await super().smtp_QUIT(arg)

        async def smtp_MAIL(self, arg):
            self.note("MAIL", arg)
            if not self.session.host_name:
                return await self.push("503 5.5.1 Error: send HELO first")
            if self.envelope.mail_from is not None:
                return await self.push("503 5.5.1 Error: nested MAIL command")
            p = parse_path(arg, "FROM:")
            if p is None:
                return await self.push("501 5.5.4 Syntax: MAIL FROM:<address>")
            addr, params = p
            for prm in params:
                k, _, v = prm.partition("=")
                k = k.upper()
                if k == "BODY" and v.upper() == "8BITMIME" and b.get("eightbitmime"):
                    continue
                if k == "BODY" and v.upper() == "7BIT":
                    continue
                if k == "SMTPUTF8" and b.get("smtputf8"):
                    continue
                if k == "SIZE" and b.get("size"):
                    if not v.isdigit():
                        return await self.push("501 5.5.4 bad SIZE")
                    if int(v) > b["size"]:
                        return await self.push("552 5.3.4 Message size exceeds fixed limit")
                    continue
                if k in ("RET", "ENVID") and b.get("dsn"):
                    continue
                return await self.push("555 5.5.4 MAIL parameter %s not supported" % k)
            self.envelope.mail_from = arg_text(addr)
            self.envelope.mail_options = params and [arg_text(x) for x in params] or []
            self.envelope.rcpts = []
            await self.push("250 2.1.0 Ok")

        async def smtp_RCPT(self, arg):
            self.note("RCPT", arg)
            if self.envelope.mail_from is None:
                return await self.push("503 5.5.1 Error: need MAIL command")
            p = parse_path(arg, "TO:")
            if p is None:
                return await self.push("501 5.5.4 Syntax: RCPT TO:<address>")
            addr, params = p
            addr = arg_text(addr)
            for prm in params:
                k = prm.partition("=")[0].upper()
                if k in ("NOTIFY", "ORCPT") and b.get("dsn"):
                    continue
                return await self.push("555 5.5.4 RCPT parameter %s not supported" % k)
            code, reply = 250, "250 2.1.5 Ok"
            local = addr.rpartition("@")[0].lower()
            rules = b.get("rcpt_rules") or {}
            for prefix in sorted(rules, key=len, reverse=True):
                if local.startswith(prefix):
                    rule = rules[prefix]
                    k = rule[3] if len(rule) > 3 else None
                    if k is None or first_times("rule:" + addr.lower(), k):
                        code, reply = rule[0], "%d %s %s" % (rule[0], rule[1], rule[2])
                    break
            if code == 250 and b.get("rcpt_reject"):
                code, reply = 550, "550 5.1.1 receiver: no such user here"
            if code == 250 and b.get("rcpt_tempfail") and first_times("rcpt_tempfail", b["rcpt_tempfail"]):
                code, reply = 451, "451 4.3.0 receiver: try again later (%d)" % counters["rcpt_tempfail"]
            emit("rcpt", conn=self.conn_id, addr=addr, params=params, code=code, reply=reply)
            if code == 250:
                self.envelope.rcpts.append((addr, [arg_text(x) for x in params]))
            await self.push(reply)

        async def smtp_DATA(self, arg):
            self.note("DATA", arg)
            if self.envelope.mail_from is None:
                return await self.push("503 5.5.1 Error: need MAIL command")
            if not getattr(self.envelope, "rcpts", None):
                return await self.push("554 5.5.1 Error: no valid recipients")
            if arg:
                return await self.push("501 5.5.4 Syntax: DATA")
            drop = b.get("close_in_data") and first_times("close_in_data", b["close_in_data"])
            await self.push("354 3.0.0 End data with <CR><LF>.<CR><LF>")
            raw = bytearray()
            prev_crlf = True
            try:
                while True:
                    line = await self._reader.readuntil(b"\n")
                    if prev_crlf and line == b".\r\n":
                        break
                    raw += line
                    prev_crlf = line.endswith(b"\r\n")
                    if drop:
                        emit("dropped", conn=self.conn_id, stage="data", octets=len(raw))
                        self.transport.close()
                        return
            except asyncio.IncompleteReadError as e:
                emit("data-aborted", conn=self.conn_id, octets=len(raw) + len(e.partial))
                self.transport.close()
                return
            except asyncio.CancelledError:
                emit("data-aborted", conn=self.conn_id, octets=len(raw))
                raise
            st = b.get("stall_dot")
            if st and first_times("stall_dot", st[1]):
                emit("stall", conn=self.conn_id, stage="dot", seconds=st[0], octets=len(raw))
                await asyncio.sleep(st[0])
                self.transport.close()
                return
            if b.get("reply_delay"):
                await asyncio.sleep(b["reply_delay"])
            env = self.envelope
            self._set_post_data_state()
            if b.get("data_tempfail") and first_times("data_tempfail", b["data_tempfail"]):
                emit("data-tempfail", conn=self.conn_id, octets=len(raw))
                return await self.push("451 4.3.0 receiver: data not taken this time (%d)"
                                       % counters["data_tempfail"])
            state["tx"] += 1
            name = "%s-%d" % (conf["hostname"], state["tx"])
            reply = "250 2.0.0 Ok: received as %s" % name
            lf, cr = bare_line_ends(raw)
            emit("transaction", conn=self.conn_id, n=state["tx"], mail_from=env.mail_from,
                 mail_params=env.mail_options, rcpts=env.rcpts, raw=_b2s(raw), data=_b2s(unstuff(raw)),
                 bare_lf=lf, bare_cr=cr, reply=reply, tls=self.tls_text())
            await self.push(reply)

        def tls_text(self):
            if not self._tls_protocol:
                return None
            obj = self.transport.get_extra_info("ssl_object")
            if obj is None:
                return "unknown"
            return "%s:%s" % (obj.version(), obj.cipher()[0])

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(Receiver, conf["host"], conf["port"],
                                                        reuse_address=True))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    with open(conf["ready"], "w") as f:
        f.write("%d\n" % os.getpid())
    try:
        loop.run_forever()
    finally:
        server.close()
        out.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.stderr.write("usage: receivers.py serve CONF.json\n")
        sys.exit(2)
