"""The rollout as a user runs it: the project's own ansible/site.yml, over the ordinary ssh
connection, from a controller that is a host on the lab's network, against an inventory of the
lab's machines. Per-host certificates and services go in host_vars, as docs/packaging.md shows.
"""

import json
import os
import re
import subprocess
import time

from . import fleet
from .image import ADMIN
from .log import fail, info

CONTROLLER = fleet.CONTROLLER[0]


class Rollout:
    def __init__(self, repo, work, net, mesh_pki, etcd_pki):
        self.repo = repo
        self.net = net
        self.dir = os.path.join(work, "ansible")
        self.inventory = os.path.join(self.dir, "inventory")
        os.makedirs(os.path.join(self.inventory, "host_vars"), exist_ok=True)
        os.makedirs(os.path.join(self.inventory, "group_vars"), exist_ok=True)
        self.key = os.path.join(self.dir, "id_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-controller",
                        "-f", self.key], check=True)
        with open(self.key + ".pub") as f:
            self.public_key = f.read()
        lines = ["[hostmesh]"]
        lines += [f"{name} ansible_host=10.77.0.{octet}" for name, octet in fleet.MESH.items()]
        lines += ["", "[hostmesh:vars]", f"ansible_user={ADMIN}",
                  f"ansible_ssh_private_key_file={self.key}",
                  "ansible_python_interpreter=/usr/bin/python3"]
        self._write("hosts.ini", "\n".join(lines) + "\n")
        agent_cert, agent_key = etcd_pki.client("hostmesh-agent")
        group = {
            "hostmesh_etcd_endpoints": fleet.etcd_endpoints(),
            "hostmesh_etcd_ca_pem": _read(etcd_pki.ca),
            "hostmesh_etcd_cert_pem": _read(agent_cert),
            "hostmesh_etcd_key_pem": _read(agent_key),
            # Short enough that the lab's lease checks run quickly, as a fleet might tune it.
            "hostmesh_etcd_lease_ttl": "5s",
            "hostmesh_drain": "3s",
        }
        self._write("group_vars/hostmesh.yml", json.dumps(group, indent=1))
        for name in fleet.MESH:
            certs = mesh_pki.host(name)
            host = {
                # agent.host stays unset, as shipped: the agent takes the machine's host name.
                "hostmesh_tls_ca_pem": _read(os.path.join(certs, "ca.pem")),
                "hostmesh_tls_cert_pem": _read(os.path.join(certs, "host.pem")),
                "hostmesh_tls_key_pem": _read(os.path.join(certs, "host.key")),
                "hostmesh_dns_listen": fleet.SHIM_LISTEN[name],
                "hostmesh_services": fleet.SERVICES[name],
            }
            self._write(f"host_vars/{name}.yml", json.dumps(host, indent=1))

    def _write(self, name, text):
        with open(os.path.join(self.inventory, name), "w") as f:
            f.write(text)

    def run(self, log_name, package, limit=None, extra=()):
        """Runs site.yml; returns (seconds, {host: changed count}). Fails with the log's tail."""
        argv = ["ansible-playbook", "-i", os.path.join(self.inventory, "hosts.ini"),
                os.path.join(self.repo, "ansible", "site.yml"), "-e", f"hostmesh_package_file={package}",
                *extra]
        if limit:
            argv += ["--limit", limit]
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(self.repo, "ansible", "ansible.cfg"),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
                   ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_FORKS="10",
                   ANSIBLE_LOCAL_TEMP=os.path.join(self.dir, "tmp"),
                   ANSIBLE_SSH_CONTROL_PATH_DIR=os.path.join(self.dir, "cp"))
        log = os.path.join(self.dir, log_name)
        start = time.monotonic()
        with open(log, "w") as out:
            result = self.net.exec(CONTROLLER, argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   timeout=900)
        seconds = time.monotonic() - start
        text = _read(log)
        if result.returncode != 0:
            fail(f"ansible-playbook ({log_name}) exited {result.returncode}:\n{text[-4000:]}")
        changed = {m.group(1): int(m.group(2))
                   for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", text, re.M)}
        info(f"ansible-playbook {log_name}: {seconds:.1f}s, changed per host {changed}")
        return seconds, changed, text


def _read(path):
    with open(path) as f:
        return f.read()
