# hostmesh %post ($1: 1 = install, 2 = upgrade). Like %systemd_post: a fresh install applies the
# preset policy (enabled or not, never started: the agent needs etcd and TLS files first).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset hostmesh.service >/dev/null 2>&1 || :
fi
# Directories the operator fills; the host key lives in tls/, readable by the agent's group.
install -d -m 0755 -o root -g root /etc/hostmesh/services.d
install -d -m 0750 -o root -g hostmesh /etc/hostmesh/tls
