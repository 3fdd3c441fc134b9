"""
netfixtures.py - the network far side shared by the integration tests that
make tern talk to other servers (test_dns.py, test_outbound.py,
test_relay_process.py, test_routes.py, test_queue_control.py, and
receivers.py):

wait_for          poll a predicate until it is true or a timeout passes
spawn, stop_popen a helper process in its own session, recorded in
                  $TERN_TEST_PIDDIR like tern itself and stopped by PID
lock_first        an exclusive flock on the first free of several lock files
LoopbackBlock     one 127.0.N.0/24 block held that way
dns_query_rcode   the rcode of a plain UDP DNS query
ServfailDNS       a UDP resolver stub that answers SERVFAIL to everything
Dnsmasq           dnsmasq on 127.0.0.1:<free port> serving a test zone

Only loopback is ever used.
"""

import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

DNSMASQ = "/usr/sbin/dnsmasq"


def wait_for(pred, timeout=harness.WAIT):
    """pred()'s first true value within timeout seconds, else its last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


# --------------------------------------------------------------------------
# processes (by PID only)

def spawn(cmd, errpath, kind, mode="wb", **kw):
    """Popen cmd in a session of its own, stdout and stderr to errpath
    (opened with mode), recorded for tests/run.py as kind."""
    with open(errpath, mode) as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                             start_new_session=True, **kw)
    harness._record_pid(p.pid, p.pid, kind)
    return p


def stop_popen(p, timeout=10.0):
    """SIGTERM, up to timeout seconds, then SIGKILL; reaped and unrecorded."""
    if p is None:
        return
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                p.kill()
            except ProcessLookupError:
                pass
            p.wait(10)
    harness._unrecord_pid(p.pid)


# --------------------------------------------------------------------------
# exclusive resources (flock: released by the kernel if the holder dies)

def lock_first(values, path_of):
    """(fd, value) for the first of values whose lock file path_of(value)
    this process could lock exclusively, or (None, None)."""
    for v in values:
        fd = os.open(path_of(v), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd, v
        except OSError:
            os.close(fd)
    return None, None


class LoopbackBlock:
    """127.0.N.0/24 (first <= N < last) held exclusively by this process
    until release(), so that two test files or the two builds of one file
    running at the same time never want the same IP:25."""

    def __init__(self, first=40, last=250):
        self.fd, self.n = lock_first(range(first, last),
                                     lambda n: "/tmp/tern-test-loopback-127.0.%d.lock" % n)
        if self.fd is None:
            raise RuntimeError("no free 127.0.N.0/24 block (all locked)")

    def ip(self, host):
        return "127.0.%d.%d" % (self.n, host)

    def release(self):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------
# DNS

def build_query(name, qtype, qid=0x1234):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)


def dns_query_rcode(host, port, name, qtype):
    """rcode of a plain UDP query, or None without an answer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(build_query(name, qtype), (host, port))
        data, _ = s.recvfrom(4096)
        return data[3] & 0x0F if len(data) >= 12 else None
    except OSError:
        return None
    finally:
        s.close()


class ServfailDNS:
    """Answers every UDP query on 127.0.0.1:port with SERVFAIL (rcode 2),
    from a thread; counts the queries."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            self.queries += 1
            qid, flags, qd = struct.unpack("!HHH", data[:6])
            rflags = 0x8000 | (flags & 0x7900) | 0x0080 | 2   # QR, opcode, RD, RA, SERVFAIL
            # echo the question section (up to the end of the first question)
            end = 12
            while end < len(data) and data[end] != 0:
                end += data[end] + 1
            question = data[12:end + 5]
            try:
                self.sock.sendto(struct.pack("!HHHHHH", qid, rflags, 1 if qd else 0, 0, 0, 0)
                                 + question, peer)
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


class Dnsmasq:
    """dnsmasq on 127.0.0.1:<free port> serving `args` (--mx-host=...,
    --host-record=...), NXDOMAIN for any other name under .test; ready
    once it answers an MX query for probe_name. In its own session,
    stopped by PID."""

    def __init__(self, args, workdir, probe_name="two.test"):
        self.args = list(args)
        self.workdir = workdir
        self.probe = probe_name
        self.proc = None
        self.port = None

    def start(self):
        last = ""
        for _ in range(10):
            port = harness.free_port()
            if not harness.port_is_free(port, kind=socket.SOCK_DGRAM):
                continue
            errpath = os.path.join(self.workdir, "dnsmasq.err")
            cmd = [DNSMASQ, "-k", "--port=%d" % port, "--listen-address=127.0.0.1",
                   "--bind-interfaces", "--no-resolv", "--no-hosts", "--local=/test/",
                   "--log-facility=-",
                   "--pid-file=%s" % os.path.join(self.workdir, "dnsmasq.pid")] + self.args
            self.proc = spawn(cmd, errpath, "dnsmasq")
            self.port = port
            if self.wait_ready():
                return self
            with open(errpath, errors="replace") as f:
                last = f.read()
            self.stop()
        raise AssertionError("dnsmasq did not start: %s" % last[-2000:])

    def wait_ready(self, timeout=harness.WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if dns_query_rcode("127.0.0.1", self.port, self.probe, 15) == 0:
                return True
            time.sleep(0.1)
        return False

    def stop(self):
        stop_popen(self.proc)
        self.proc = None
