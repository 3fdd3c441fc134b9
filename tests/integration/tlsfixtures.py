"""
tlsfixtures.py - a private PKI for the TLS tests, made with the openssl
command: a test CA and certificates it signs for given host names and IP
addresses, plus self-signed ones that nothing trusts. Keys are EC P-256
(fast to make). Nothing here touches the network.

    pki = Pki(workdir)
    cert, key = pki.issue("mx.tls.test", ips=["127.0.0.2"])
    cert, key = pki.self_signed("mx.tls.test")
    pki.ca_cert          # PEM path, for tern's tls_ca_file
"""

import os
import subprocess

OPENSSL = "/usr/bin/openssl"


def openssl_missing_reason():
    if not os.access(OPENSSL, os.X_OK):
        return "openssl not installed (make deps)"
    return None


def _run(args, cwd):
    r = subprocess.run([OPENSSL] + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise AssertionError("openssl %s failed: %s" % (" ".join(args), r.stderr.decode()))
    return r.stdout


class Pki:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "pki")
        os.makedirs(self.dir, exist_ok=True)
        self.ca_key = os.path.join(self.dir, "ca.key")
        self.ca_cert = os.path.join(self.dir, "ca.pem")
        self.n = 0
        _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "2",
              "-subj", "/CN=tern test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], self.dir)

    def _names(self, name, ips):
        san = ["DNS:%s" % name] + ["IP:%s" % ip for ip in (ips or [])]
        return ",".join(san)

    def issue(self, name, ips=None, days=2):
        """(cert, key) paths: a leaf for name (and ips) signed by the CA."""
        self.n += 1
        base = os.path.join(self.dir, "leaf%d" % self.n)
        key, csr, cert = base + ".key", base + ".csr", base + ".pem"
        ext = base + ".ext"
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n"
                    "basicConstraints=CA:FALSE\n" % self._names(name, ips))
        _run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=%s" % name], self.dir)
        _run(["x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
              "-CAcreateserial", "-out", cert, "-days", str(days), "-extfile", ext], self.dir)
        os.chmod(key, 0o600)
        return cert, key

    def self_signed(self, name, ips=None):
        """(cert, key) paths: a self-signed certificate, trusted by nobody."""
        self.n += 1
        base = os.path.join(self.dir, "self%d" % self.n)
        key, cert = base + ".key", base + ".pem"
        _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", key, "-out", cert, "-days", "2",
              "-subj", "/CN=%s" % name, "-addext",
              "subjectAltName=%s" % self._names(name, ips)], self.dir)
        os.chmod(key, 0o600)
        return cert, key
