"""One lab machine: the shared image under a private overlay, booted by `systemd-nspawn --boot`
inside its own network-namespace host, with systemd as PID 1. Commands run in it through
nsenter into all of its namespaces, as root, like `machinectl shell` would.
"""

import os
import shlex
import shutil
import signal
import subprocess
import time

from . import net
from .log import fail, info

MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Without a systemd on the lab's host, nspawn puts a machine's cgroups under its own cgroup plus
# "/payload". Machines started from one cgroup would share that subtree, and each one's systemd
# would remove the others' service cgroups (seen: status=219/CGROUP at boot). So every machine
# starts from a cgroup of its own, in each hierarchy systemd uses: cgroup v2 (pure or the
# unified part of a hybrid host) and v1's name=systemd.
CGROUP_ROOTS = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"]


def cgroup_dirs(name):
    roots = [r for r in CGROUP_ROOTS if os.path.exists(os.path.join(r, "cgroup.procs"))]
    if not roots and os.path.exists("/sys/fs/cgroup/cgroup.procs"):
        roots = ["/sys/fs/cgroup"]  # pure cgroup v2
    return [os.path.join(r, net.PREFIX + name) for r in roots]


def remove_cgroup(path):
    """Removes a cgroup and what systemd made below it, deepest first (only empty ones go)."""
    for parent, dirs, _ in os.walk(path, topdown=False):
        for d in dirs:
            try:
                os.rmdir(os.path.join(parent, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


WORK_PREFIX = "hostmesh-lab."


def sweep(tmp="/tmp"):
    """Stops machines and unmounts overlays that an earlier run left (killed, or --keep)."""
    # Every process in one of the lab's network namespaces (a machine's PID 1 and all it runs;
    # killing a PID 1 from outside ends its PID namespace), and any nspawn still holding a tree.
    lab_nets = set()
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        if name.startswith(net.PREFIX):
            lab_nets.add(os.stat(f"/run/netns/{name}").st_ino)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            in_lab = os.stat(f"/proc/{entry}/ns/net").st_ino in lab_nets
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        nspawn = argv[0].endswith(b"systemd-nspawn") and \
            any(a.startswith(f"--directory={tmp}/{WORK_PREFIX}".encode()) for a in argv)
        if in_lab or nspawn:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    for root in CGROUP_ROOTS + ["/sys/fs/cgroup"]:
        if os.path.isdir(root):
            for entry in os.listdir(root):
                if entry.startswith(net.PREFIX):
                    remove_cgroup(os.path.join(root, entry))
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f if f" {tmp}/{WORK_PREFIX}" in line]
    for mount in reversed(mounts):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    for entry in os.listdir(tmp):
        if entry.startswith(WORK_PREFIX):
            shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)


class Machine:
    def __init__(self, name, address, base, workdir):
        self.name = name
        self.address = address
        self.dir = os.path.join(workdir, name)
        self.root = os.path.join(self.dir, "root")
        self.console_log = os.path.join(self.dir, "console.log")
        self.process = None
        self.leader = None
        for d in ("upper", "work", "root"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={base},upperdir={self.dir}/upper,workdir={self.dir}/work", self.root],
            check=True,
        )

    # --- before boot: the machine's own files ----------------------------------------------
    def path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def write(self, path, text, mode=0o644, owner=None):
        """Writes a file into the machine's tree; OWNER is a user name of the machine."""
        full = self.path(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if os.path.islink(full):
            os.unlink(full)
        with open(full, "w") as f:
            f.write(text)
        os.chmod(full, mode)
        if owner:
            uid, gid = self.ids(owner)
            os.chown(full, uid, gid)

    def ids(self, user):
        """The uid and gid of USER in the machine's /etc/passwd."""
        with open(self.path("/etc/passwd")) as f:
            for line in f:
                fields = line.split(":")
                if fields[0] == user:
                    return int(fields[2]), int(fields[3])
        fail(f"{self.name}: no user {user} in the image")

    def mask(self, *units):
        """Keeps units from starting at boot (the machine's role does not include them)."""
        for unit in units:
            link = self.path(f"/etc/systemd/system/{unit}")
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink("/dev/null", link)

    # --- life ------------------------------------------------------------------------------
    def boot(self):
        """Starts systemd in the machine; `wait_booted` waits for it."""
        console = open(self.console_log, "ab")
        self.cgroups = cgroup_dirs(self.name)
        for d in self.cgroups:
            os.makedirs(d, exist_ok=True)

        def join_cgroups():  # runs in the child, before nspawn starts
            for d in self.cgroups:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write("0")
        self.process = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--quiet", f"--directory={self.root}",
             f"--machine={self.name}", f"--network-namespace-path={net.ns_path(self.name)}",
             # nft for capture = "nft" (the agent's own CAP_NET_ADMIN comes from its unit).
             "--capability=CAP_NET_ADMIN",
             # No machined or systemd on the lab's host to register with.
             "--register=no", "--keep-unit", "--console=read-only",
             # The machine's resolv.conf is its own (what its resolver set up), not the host's.
             "--resolv-conf=off", "--timezone=off"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=join_cgroups,
        )
        console.close()

    def wait_booted(self, timeout=120):
        deadline = time.monotonic() + timeout
        while self.leader is None:
            if self.process.poll() is not None:
                fail(f"{self.name}: systemd-nspawn exited {self.process.returncode}: {self.console_tail()}")
            self.leader = self._find_leader()
            if time.monotonic() > deadline:
                fail(f"{self.name}: systemd did not start within {timeout}s: {self.console_tail()}")
            time.sleep(0.1)
        # Until its bus is up, systemctl in the machine answers nothing; ask again.
        state = ""
        while state not in ("running", "degraded", "maintenance", "stopping"):
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"{self.name}: systemd did not finish booting within {timeout}s "
                     f"(state {state!r}): {self.console_tail()}")
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                             timeout=left).stdout.strip()
            if not state:
                time.sleep(0.2)
        if state != "running":
            failed = self.run(["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout
            fail(f"{self.name}: system is {state!r} after boot; failed units:\n{failed}")

    def _find_leader(self):
        """The container's PID 1 as the host sees it: the `systemd` process under nspawn."""
        children = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append((int(entry), comm))
        queue = [self.process.pid]
        while queue:
            pid = queue.pop()
            for child, comm in children.get(pid, []):
                if comm == "systemd":
                    return child
                queue.append(child)
        return None

    def console_tail(self, lines=20):
        try:
            with open(self.console_log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no console output)"

    def shutdown(self, timeout=60):
        """An orderly poweroff (nspawn turns SIGTERM into one), then the overlay is unmounted."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.leader = None
        subprocess.run(["umount", self.root], check=False, capture_output=True)
        for d in getattr(self, "cgroups", []):
            remove_cgroup(d)

    # --- inside the booted machine ---------------------------------------------------------
    def command(self, argv):
        """The host-side argv that runs ARGV inside the machine as root, with a clean environment."""
        return ["nsenter", "-t", str(self.leader), "-a", "--",
                "/usr/bin/env", "-i", f"PATH={MACHINE_PATH}", "LANG=C.UTF-8", "HOME=/root", *argv]

    def run(self, argv, check=True, timeout=60, input=None):
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        result = subprocess.run(self.command(argv), capture_output=True, text=True,
                                timeout=timeout, input=input)
        if check and result.returncode != 0:
            fail(f"{self.name}: `{shlex.join(argv)}` exited {result.returncode}:\n"
                 f"{result.stdout}{result.stderr}")
        return result

    def write_live(self, path, text, mode="0644"):
        """Writes a file in the running machine, as an operator's editor would."""
        self.run(["/bin/sh", "-c", f'mkdir -p "${{1%/*}}" && cat > "$1" && chmod {mode} "$1"', "sh", path],
                 input=text)

    def popen(self, argv, **kwargs):
        return subprocess.Popen(self.command(argv), **kwargs)

    def systemctl(self, *args, check=True, timeout=120):
        return self.run(["systemctl", *args], check=check, timeout=timeout)

    def show(self, unit, prop):
        return self.systemctl("show", "-P", prop, unit).stdout.strip()

    def wait_for(self, what, predicate, timeout=60, interval=0.2):
        """Polls PREDICATE (returning a truthy value when met) until TIMEOUT; fails naming WHAT."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except Exception as e:  # a poll that errors is a poll that is not met yet
                last = e
            else:
                if last:
                    return last
            time.sleep(interval)
        fail(f"{self.name}: {what} not within {timeout}s (last: {last!r})")

    def info(self, message):
        info(f"[{self.name}] {message}")
