# hostmesh %preun ($1: 0 = erase, 1 = upgrade). Like %systemd_preun: on erase, stop and disable
# the agent, and take the mesh domain out of the host resolver.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now hostmesh.service >/dev/null 2>&1 || :
    /usr/bin/hostmesh dns disable || :
fi
