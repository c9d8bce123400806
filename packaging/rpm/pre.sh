# hostmesh %pre: create the system user before the files it owns are unpacked (the sysusers.d
# file is not on disk yet, so it is passed inline, as Fedora's %sysusers_create_compat does).
echo 'u hostmesh - "hostmesh service mesh agent" /var/lib/hostmesh /usr/sbin/nologin' |
    systemd-sysusers --replace=/usr/lib/sysusers.d/hostmesh.conf - || :
