"""The lab's two PKIs, made on the controller as an operator would:
- the mesh CA and one certificate per host, with `hostmesh ca init|issue` (docs/tls.md);
- etcd's own CA (openssl): a certificate per member for peers and clients, and a client
  certificate for the agents, since the members require client certificates.
"""

import os
import subprocess


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class EtcdPki:
    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self.ca = os.path.join(dir, "ca.pem")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-days", "30", "-subj", "/CN=lab-etcd-ca",
                 "-keyout", os.path.join(dir, "ca.key"), "-out", self.ca,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def member(self, name, address):
        """Serves clients and peers, and is a client of its peers: both usages."""
        return self._issue(name, f"subjectAltName=DNS:{name},IP:{address},IP:127.0.0.1\n"
                                 "extendedKeyUsage=serverAuth,clientAuth\n")

    def client(self, name):
        return self._issue(name, "extendedKeyUsage=clientAuth\n")

    def _issue(self, name, extensions):
        cert, key = (os.path.join(self.dir, f"{name}.{ext}") for ext in ("pem", "key"))
        csr, ext = (os.path.join(self.dir, f"{name}.{e}") for e in ("csr", "ext"))
        with open(ext, "w") as f:
            f.write(extensions)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", os.path.join(self.dir, "ca.key"),
                 "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", cert)
        return cert, key


class MeshPki:
    def __init__(self, hostmesh, dir):
        self.hostmesh = hostmesh
        self.dir = dir
        subprocess.run([hostmesh, "ca", "init", "--dir", os.path.join(dir, "ca")],
                       check=True, capture_output=True, timeout=60)

    def host(self, name):
        """`hostmesh ca issue` for HOST: returns the directory with ca.pem, host.pem, host.key."""
        out = os.path.join(self.dir, name)
        subprocess.run([self.hostmesh, "ca", "issue", "--dir", os.path.join(self.dir, "ca"),
                        "--host", name, "--out", out], check=True, capture_output=True, timeout=60)
        return out
