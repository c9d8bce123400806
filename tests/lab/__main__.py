"""The lab: real Debian machines (systemd as PID 1) on a private network, a 3-member etcd cluster
with TLS, and hostmesh installed from its .deb by the project's ansible role over ssh. Then the
checks of issue 13, in order; any failure stops the run with what was expected and seen.

    sudo tests/lab/run [--keep] [--only CHECK,...]      (root: namespaces, overlays, systemd-nspawn)

--keep leaves the machines running after a failure, for a look inside with
`nsenter -t PID -a` (the PIDs are printed). docs/lab.md describes the lab.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from . import checks, fleet, image, net, pki
from .deploy import Rollout
from .log import LabFailure, elapsed, info, step
from . import machine
from .machine import Machine


class Lab:
    def __init__(self, repo, work):
        self.repo = repo
        self.work = work
        self.figures = {}
        self.net = None
        self.machines = {}
        self.before = {}  # each mesh machine's resolver before hostmesh (checks.resolver_state)

    def mesh(self, name):
        return self.machines[name]


def sh(argv, **kwargs):
    return subprocess.run(argv, check=True, **kwargs)


def packages(lab):
    """The .deb of this tree's release build, and the same binary as the next patch version."""
    target = os.path.join(lab.repo, "target")
    binary = os.path.join(target, "release", "hostmesh")
    if not os.access(binary, os.X_OK):
        raise LabFailure(f"{binary} is missing: build it first (cargo build --release -p hostmesh)")
    version = next(line.split('"')[1] for line in open(os.path.join(lab.repo, "Cargo.toml"))
                   if line.startswith("version = "))
    major_minor, patch = version.rsplit(".", 1)
    newer = f"{major_minor}.{int(patch) + 1}"
    out = os.path.join(lab.work, "pkg")
    for v in (version, newer):
        with open(os.path.join(lab.work, f"build-{v}.log"), "w") as log:
            sh([os.path.join(lab.repo, "packaging", "build.sh"), "--no-build", "--version", v,
                "--out", out], stdout=log, stderr=subprocess.STDOUT)
    return binary, (os.path.join(out, f"hostmesh_{version}-1_amd64.deb"), version), \
        (os.path.join(out, f"hostmesh_{newer}-1_amd64.deb"), newer)


def raise_inotify_limit(want=1024):
    """Six machines' systemd, journald and resolvers all run as root on one kernel, and share
    root's inotify instances (128 by default): past that, path units fail at boot."""
    path = "/proc/sys/fs/inotify/max_user_instances"
    with open(path) as f:
        have = int(f.read())
    if have < want:
        with open(path, "w") as f:
            f.write(str(want))
        info(f"fs.inotify.max_user_instances raised from {have} to {want}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the machines running on failure")
    parser.add_argument("--only", metavar="CHECK,...",
                        help="after the rollout, run only these checks (names from tests/lab/checks.py); "
                             "for working on one check, never for CI")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("lab: needs root (network namespaces, overlay mounts, systemd-nspawn)", file=sys.stderr)
        return 2
    missing = [t for t in ("systemd-nspawn", "mmdebstrap", "ansible-playbook", "ssh", "ssh-keygen",
                           "openssl", "nsenter", "ip") if shutil.which(t) is None]
    if missing:
        print(f"lab: missing tools: {' '.join(missing)} (.ci/run installs them)", file=sys.stderr)
        return 2
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    raise_inotify_limit()
    machine.sweep()  # before the network's own sweep: it finds leftovers by their namespaces
    work = tempfile.mkdtemp(prefix=machine.WORK_PREFIX)
    lab = Lab(repo, work)
    ok = False
    try:
        step("packages (packaging/build.sh --no-build)")
        binary, lab.deb, lab.newer_deb = packages(lab)
        base = image.base_tree(repo)
        step("network, PKIs and machines")
        lab.net = net.Network()
        lab.net.add_host(*fleet.CONTROLLER)
        etcd_pki = pki.EtcdPki(os.path.join(work, "etcd-pki"))
        mesh_pki = pki.MeshPki(binary, os.path.join(work, "mesh-pki"))
        lab.etcd_pki = etcd_pki
        lab.rollout = Rollout(repo, work, lab.net, mesh_pki, etcd_pki)
        for name, octet in {**fleet.ETCD, **fleet.MESH}.items():
            address = lab.net.add_host(name, octet)
            m = Machine(name, address, base, os.path.join(work, "machines"))
            lab.machines[name] = m
            fleet.prepare_common(m, lab.rollout.public_key)
            if name in fleet.ETCD:
                fleet.prepare_etcd(m, etcd_pki)
            else:
                fleet.prepare_mesh(m)
        start = time.monotonic()
        for m in lab.machines.values():
            m.boot()
        for m in lab.machines.values():
            m.wait_booted()
        lab.figures["boot of 6 machines (s)"] = round(time.monotonic() - start, 1)
        info("booted: " + ", ".join(f"{m.name} (pid {m.leader})" for m in lab.machines.values()))
        chosen = checks.ALL
        if args.only:
            wanted = set(args.only.split(","))
            unknown = wanted - {c.__name__ for c in checks.ALL}
            if unknown:
                raise LabFailure(f"no such checks: {', '.join(sorted(unknown))}")
            chosen = [c for c in checks.ALL if c in checks.SETUP or c.__name__ in wanted]
        for check in chosen:
            step(check.__doc__.strip().splitlines()[0])
            check(lab)
        ok = True
    except LabFailure as e:
        print(f"lab: FAIL: {e}", file=sys.stderr)
    finally:
        if not ok and args.keep:
            print(f"lab: kept {work}; machines: " +
                  ", ".join(f"{m.name}={m.leader}" for m in lab.machines.values()), file=sys.stderr)
        else:
            for m in lab.machines.values():
                m.shutdown()
            if lab.net:
                lab.net.close()
            shutil.rmtree(work, ignore_errors=True)
    step("figures")
    for key, value in lab.figures.items():
        info(f"{key}: {value}")
    print(f"lab: {'ok' if ok else 'FAILED'} in {elapsed():.0f}s", flush=True)
    return 0 if ok else 1


sys.exit(main())
