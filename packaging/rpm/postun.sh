# hostmesh %postun ($1: 0 = erase, 1 = upgrade). Like %systemd_postun_with_restart: after an
# upgrade, restart the agent if it was running. The hostmesh user is never removed.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
# On erase: lockdown's nftables table (docs/lockdown.md) outlives a stop, a crash and an
# upgrade on purpose (fail closed), but with the package gone no agent will ever replace or
# delete it. Declaring the table first makes the delete succeed when there is none.
if [ "$1" -eq 0 ] && command -v nft >/dev/null 2>&1; then
    printf 'table inet hostmesh_lockdown\ndelete table inet hostmesh_lockdown\n' | nft -f - ||
        echo "hostmesh: could not delete the nftables table inet hostmesh_lockdown; delete it with: nft delete table inet hostmesh_lockdown" >&2
fi
if [ "$1" -ge 1 ]; then
    systemctl try-restart hostmesh.service >/dev/null 2>&1 || :
fi
