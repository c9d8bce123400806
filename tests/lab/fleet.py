"""Who is who in the lab, and what each machine is before configuration management reaches it:
the base install a fleet's image would give (apps, the resolver, ssh access for ansible).

- etcd1..3: a 3-member etcd cluster run by Debian's own etcd.service, TLS for peers and clients
  with client certificates required.
- m1: systemd-resolved, the client machine (no service of its own);
- m2: dnsmasq, runs `web` (nginx) and later `api`;
- m3: unbound, runs `web` and `redis`.
dnsmasq and unbound hold 127.0.0.1:53 themselves, so on m2 and m3 the shim listens on
127.0.0.1:8600 (docs/packaging.md "Things to know per resolver").
"""

import os

from .image import ADMIN
from .machine import Machine

ETCD = {"etcd1": 11, "etcd2": 12, "etcd3": 13}
MESH = {"m1": 21, "m2": 22, "m3": 23}
CONTROLLER = ("ctl", 2)
RESOLVER = {"m1": "resolved", "m2": "dnsmasq", "m3": "unbound"}
SHIM_LISTEN = {"m1": "127.0.0.1:53", "m2": "127.0.0.1:8600", "m3": "127.0.0.1:8600"}
RESOLVER_UNITS = {"resolved": "systemd-resolved.service", "dnsmasq": "dnsmasq.service",
                  "unbound": "unbound.service"}

# The apps: nginx answers with the machine's name, so a test sees which instance served it.
NGINX_SITE = """server {
    listen 127.0.0.1:18080;
    location = /healthz { return 200 "ok\\n"; }
    location / { return 200 "web on $hostname\\n"; }
}
server {
    listen 127.0.0.1:18081;
    location / { return 200 "api on $hostname\\n"; }
}
"""

# What ansible's hostmesh_services says per machine (the keys of a service file, plus id).
SERVICES = {
    "m1": [],
    "m2": [
        {"name": "web", "port": 8080, "target": "127.0.0.1:18080", "protocol": "http",
         "check": {"http": "/healthz", "interval": "1s", "timeout": "1s"}},
    ],
    "m3": [
        {"name": "web", "port": 8080, "target": "127.0.0.1:18080", "protocol": "http",
         "check": {"http": "/healthz", "interval": "1s", "timeout": "1s"}},
        {"name": "redis", "port": 6379, "target": "127.0.0.1:6379", "protocol": "tcp",
         "check": {"tcp": True, "interval": "1s"}},
    ],
}


def hosts_file():
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    for name, octet in {**ETCD, **MESH, CONTROLLER[0]: CONTROLLER[1]}.items():
        lines.append(f"10.77.0.{octet} {name}")
    return "\n".join(lines) + "\n"


def prepare_common(m: Machine, ssh_public_key):
    m.write("/etc/hostname", m.name + "\n")
    m.write("/etc/hosts", hosts_file())
    home = f"/home/{ADMIN}"
    m.write(f"{home}/.ssh/authorized_keys", ssh_public_key, mode=0o600, owner=ADMIN)
    uid, gid = m.ids(ADMIN)
    os.chown(m.path(f"{home}/.ssh"), uid, gid)
    os.chmod(m.path(f"{home}/.ssh"), 0o700)
    # The load generator the checks run from inside a machine (an app using the mesh by name).
    with open(os.path.join(os.path.dirname(__file__), "load_client.py")) as f:
        m.write("/usr/local/bin/lab-load", f.read(), mode=0o755)


def prepare_mesh(m: Machine):
    """A mesh machine before the role runs: its resolver, its apps, nothing of hostmesh."""
    resolver = RESOLVER[m.name]
    others = [unit for r, unit in RESOLVER_UNITS.items() if r != resolver]
    m.mask("etcd.service", *others)
    if m.name != "m3":
        m.mask("redis-server.service")
    if m.name == "m1":
        m.mask("nginx.service")
    m.write("/etc/nginx/sites-enabled/default", NGINX_SITE)
    if resolver == "resolved":
        # What systemd-resolved's package sets up; the stub at 127.0.0.53 is the host's resolver.
        link = m.path("/etc/resolv.conf")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("../run/systemd/resolve/stub-resolv.conf", link)
    else:
        m.write("/etc/resolv.conf", "nameserver 127.0.0.1\n")
    if resolver != "resolved":
        # The image has systemd-resolved's resolvconf; a host whose resolver is dnsmasq or unbound
        # would not, and unbound's helper that feeds it would not run.
        m.mask("unbound-resolvconf.service")
    if resolver == "dnsmasq":
        # Only the lab's own names; no upstream exists (the lab has no way out).
        m.write("/etc/dnsmasq.d/lab.conf", "no-resolv\n")


def prepare_etcd(m: Machine, pki):
    """Debian's etcd.service reads /etc/default/etcd: the member's name, URLs and TLS files."""
    m.mask("dnsmasq.service", "unbound.service", "nginx.service", "redis-server.service")
    cert, key = pki.member(m.name, m.address)
    for name, src, mode in (("ca.pem", pki.ca, 0o644), ("member.pem", cert, 0o644),
                            ("member.key", key, 0o600)):
        with open(src) as f:
            m.write(f"/etc/etcd/pki/{name}", f.read(), mode=mode, owner="etcd")
    cluster = ",".join(f"{n}=https://10.77.0.{o}:2380" for n, o in ETCD.items())
    pki_dir = "/etc/etcd/pki"
    m.write("/etc/default/etcd", f"""# Written by the hostmesh lab: member {m.name} of a 3-member cluster, TLS everywhere.
ETCD_NAME={m.name}
ETCD_DATA_DIR=/var/lib/etcd/default
ETCD_LISTEN_PEER_URLS=https://{m.address}:2380
ETCD_LISTEN_CLIENT_URLS=https://{m.address}:2379,https://127.0.0.1:2379
ETCD_INITIAL_ADVERTISE_PEER_URLS=https://{m.address}:2380
ETCD_ADVERTISE_CLIENT_URLS=https://{m.address}:2379
ETCD_INITIAL_CLUSTER={cluster}
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=hostmesh-lab
ETCD_CERT_FILE={pki_dir}/member.pem
ETCD_KEY_FILE={pki_dir}/member.key
ETCD_TRUSTED_CA_FILE={pki_dir}/ca.pem
ETCD_CLIENT_CERT_AUTH=true
ETCD_PEER_CERT_FILE={pki_dir}/member.pem
ETCD_PEER_KEY_FILE={pki_dir}/member.key
ETCD_PEER_TRUSTED_CA_FILE={pki_dir}/ca.pem
ETCD_PEER_CLIENT_CERT_AUTH=true
""")


def etcd_endpoints():
    return [f"https://10.77.0.{o}:2379" for o in ETCD.values()]
