# hostmesh %postun ($1: 0 = erase, 1 = upgrade). Like %systemd_postun_with_restart: after an
# upgrade, restart the agent if it was running. The hostmesh user is never removed.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -ge 1 ]; then
    systemctl try-restart hostmesh.service >/dev/null 2>&1 || :
fi
