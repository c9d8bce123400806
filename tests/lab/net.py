"""The lab's network: every machine is a network namespace on one bridge, and the bridge lives
in a namespace of its own, so nothing the lab does touches the real host's network.

Addresses are 10.77.0.0/24. A default route on each machine's eth0 keeps systemd-resolved from
calling the network down; packets for any address outside the lab die at the bridge.
"""

import subprocess

PREFIX = "hml-"
BRIDGE_NS = PREFIX + "br"
SUBNET = "10.77.0"


def ns_name(host):
    return PREFIX + host


def ns_path(host):
    return f"/run/netns/{ns_name(host)}"


def ip(*args, check=True):
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def sweep():
    """Removes the namespaces a previous lab run left behind (killed before it cleaned up)."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            ip("netns", "delete", name, check=False)


class Network:
    def __init__(self):
        self.hosts = {}
        sweep()
        ip("netns", "add", BRIDGE_NS)
        ip("-n", BRIDGE_NS, "link", "set", "lo", "up")
        ip("-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
        ip("-n", BRIDGE_NS, "link", "set", "br0", "up")

    def add_host(self, host, octet):
        """A namespace `hml-HOST` with eth0 at 10.77.0.OCTET on the bridge. Returns the address."""
        ns = ns_name(host)
        address = f"{SUBNET}.{octet}"
        peer = f"v{octet}"
        ip("netns", "add", ns)
        ip("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", peer, "netns", BRIDGE_NS)
        ip("-n", BRIDGE_NS, "link", "set", peer, "master", "br0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "route", "add", "default", "dev", "eth0")
        self.hosts[host] = address
        return address

    def exec(self, host, argv, **kwargs):
        """Runs ARGV in HOST's namespace (the lab's controller uses this for ansible)."""
        return subprocess.run(["ip", "netns", "exec", ns_name(host), *argv], **kwargs)

    def close(self):
        for host in list(self.hosts):
            ip("netns", "delete", ns_name(host), check=False)
        ip("netns", "delete", BRIDGE_NS, check=False)
        self.hosts.clear()
