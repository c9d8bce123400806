"""The lab's machine image: one Debian bookworm tree with systemd as PID 1, built once with
mmdebstrap and cached, shared read-only by every machine through overlayfs.

One image serves every role (etcd member, mesh host with any of the three resolvers): a machine's
role is what the lab enables in it, as a base image plus configuration management would. The
cache key is the package list, so changing it rebuilds; a tree older than CACHE_DAYS is rebuilt
to pick up security updates.
"""

import hashlib
import os
import shutil
import subprocess
import time

from .log import step

# What a fleet's Debian host has, plus what the lab drives inside the machines:
# - systemd, dbus, systemd-resolved: PID 1, the journal, one of the three resolvers;
# - openssh-server, sudo, python3, python3-apt: ansible's ordinary ssh connection as an admin
#   user who becomes root with sudo, and its apt module;
# - nftables: the package's dependency (capture = "nft"); iproute2 for the lab's addresses;
# - dnsmasq, unbound (with dns-root-data, which it recommends, for its trust anchor): the
#   other two resolvers; etcd-server, etcd-client: the etcd members;
# - nginx-light, redis-server: the apps behind the mesh; curl, bind9-dnsutils, redis-tools:
#   the apps' clients that know nothing of hostmesh.
# procps is deliberately absent: the package must not need /bin/kill (issue 13).
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "systemd-resolved", "libnss-resolve",
    "openssh-server", "sudo", "python3", "python3-apt",
    "iproute2", "nftables",
    "dnsmasq", "unbound", "dns-root-data",
    "etcd-server", "etcd-client",
    "nginx-light", "redis-server",
    "curl", "bind9-dnsutils", "redis-tools",
]
MIRRORS = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
CACHE_DAYS = 7
ADMIN = "ops"


def cache_dir(repo):
    return os.path.join(repo, "target", "lab-cache")


def base_tree(repo):
    """The cached tree (a directory), built when missing or stale. Returns its path."""
    key = hashlib.sha256("\n".join(PACKAGES + MIRRORS + [ADMIN]).encode()).hexdigest()[:10]
    tree = os.path.join(cache_dir(repo), f"bookworm-{key}")
    stamp = tree + ".done"
    if os.path.exists(stamp) and time.time() - os.path.getmtime(stamp) < CACHE_DAYS * 86400:
        return tree
    step(f"building the machine image with mmdebstrap ({len(PACKAGES)} packages; cached in {tree})")
    for stale in (tree, tree + ".tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    if os.path.exists(stamp):
        os.unlink(stamp)
    os.makedirs(cache_dir(repo), exist_ok=True)
    # Trees of other package lists are stale: one image at a time.
    for entry in os.listdir(cache_dir(repo)):
        if entry.startswith("bookworm-") and not entry.startswith(os.path.basename(tree)):
            path = os.path.join(cache_dir(repo), entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    # mmdebstrap keeps the packages' services from starting while it builds the tree.
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(PACKAGES),
         # The admin account ansible logs in as, as a cloud image's default user.
         f"--customize-hook=chroot \"$1\" useradd --create-home --shell /bin/bash {ADMIN}",
         f"--customize-hook=echo '{ADMIN} ALL=(ALL) NOPASSWD: ALL' > \"$1/etc/sudoers.d/{ADMIN}\""
         f" && chmod 0440 \"$1/etc/sudoers.d/{ADMIN}\"",
         # Debian's images leave machine-id empty so that each machine makes its own at boot.
         "--customize-hook=echo uninitialized > \"$1/etc/machine-id\"",
         "bookworm", tree + ".tmp", *MIRRORS],
        check=True,
    )
    os.rename(tree + ".tmp", tree)
    open(stamp, "w").close()
    return tree
