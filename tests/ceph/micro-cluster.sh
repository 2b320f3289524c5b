#!/usr/bin/env bash
# A one-host Ceph cluster on 127.0.0.1 for tests and benchmarks: one monitor, one manager, one
# BlueStore OSD on a sparse 32 GiB file, pools of one replica, cephx on, on a port range of its own.
#
#   tests/ceph/micro-cluster.sh start DIR [BASE_PORT]   # prints DIR/ceph.conf when the cluster is up
#   tests/ceph/micro-cluster.sh rgw DIR                 # adds an S3 gateway; prints DIR/rgw.env
#   tests/ceph/micro-cluster.sh stop DIR                # stops the daemons by their pid files
#
# Clients use `-c DIR/ceph.conf` (or CEPH_CONF); its keyring holds client.admin.
# Tests must pass against any correct cluster; two variants of this one help check that:
#   MICRO_CLUSTER_OBJECTSTORE=memstore   the OSD keeps objects in memory (no hole reporting)
#   MICRO_CLUSTER_CLIENT_KEYRING=admin   clients read a keyring holding only client.admin
# The gateway (Ceph RGW, signature checks on) listens on 127.0.0.1:BASE_PORT+90 and has one
# user; DIR/rgw.env holds RBDX_TEST_S3_URL, RBDX_TEST_S3_ACCESS_KEY and RBDX_TEST_S3_SECRET_KEY.
# Needs Debian's ceph-mon ceph-osd ceph-mgr ceph-common (and radosgw for `rgw`).
set -euo pipefail

usage() { echo "usage: $0 start DIR [BASE_PORT] | rgw DIR | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
dir=$(realpath -m "$2")
port=${3:-46700}
conf="$dir/ceph.conf"
objectstore=${MICRO_CLUSTER_OBJECTSTORE:-bluestore}
client_keyring=${MICRO_CLUSTER_CLIENT_KEYRING:-shared}

stop() {
    local pids=()
    for f in "$dir"/run/*.pid; do
        [ -e "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    done
    for _ in $(seq 1 50); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    for _ in $(seq 1 $((limit * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "micro-cluster: $what did not happen within ${limit}s; logs in $dir/log" >&2
    exit 1
}

osd_up() { ceph -c "$conf" osd dump 2>/dev/null | grep -q '^osd\.0 up'; }

start() {
    stop 2>/dev/null || true
    rm -rf "$dir"
    mkdir -p "$dir"/{mon,mgr,osd,run,log}
    local fsid
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat > "$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
ms bind port min = $((port + 2))
ms bind port max = $((port + 89))
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon client ping timeout = 5
client mount timeout = 10
rados mon op timeout = 10
rados osd op timeout = 30
[mon]
mon data = $dir/mon
[mgr]
mgr data = $dir/mgr
keyring = $dir/mgr/keyring
[osd]
osd data = $dir/osd
keyring = $dir/osd/keyring
osd objectstore = $objectstore
bluestore block path = $dir/osd-block.img
bluestore block create = true
bluestore block size = 34359738368
bluestore fsck on mkfs = false
bluestore fsck on mount = false
bluestore cache size = 536870912
memstore device bytes = 8589934592
osd fast shutdown = false
osd snap trim sleep = 0
osd client watch timeout = 10
osd max object size = 134217728
EOF
    ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$dir/keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]" \
        "$dir/monmap" >/dev/null
    ceph-mon -c "$conf" --id a --mkfs --monmap "$dir/monmap" --keyring "$dir/keyring"
    if [ "$client_keyring" = admin ]; then
        ceph-authtool --create-keyring "$dir/client.admin.keyring" -n client.admin \
            --add-key "$(ceph-authtool "$dir/keyring" -n client.admin -p)" >/dev/null
        printf '[client]\nkeyring = %s/client.admin.keyring\n' "$dir" >> "$conf"
    fi
    ceph-mon -c "$conf" --id a
    wait_for 30 "the monitor answering" ceph -c "$conf" mon stat

    ceph -c "$conf" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
        > "$dir/mgr/keyring"
    ceph-mgr -c "$conf" --id x

    local uuid id
    uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(ceph -c "$conf" osd new "$uuid")
    ceph -c "$conf" auth get-or-create "osd.$id" mon 'allow profile osd' osd 'allow *' \
        mgr 'allow profile osd' > "$dir/osd/keyring"
    ceph-osd -c "$conf" --id "$id" --mkfs --osd-uuid "$uuid" >"$dir/log/osd-mkfs.out" 2>&1 || { cat "$dir/log/osd-mkfs.out" >&2; exit 1; }
    ceph-osd -c "$conf" --id "$id" 2>>"$dir/log/osd-start.err"
    wait_for 40 "osd.$id coming up" osd_up
    echo "$port" > "$dir/base-port"
    echo "$conf"
}

rgw() {
    [ -e "$dir/base-port" ] || { echo "micro-cluster: no cluster in $dir (run start first)" >&2; exit 1; }
    local rport access secret
    rport=$(( $(cat "$dir/base-port") + 90 ))
    access=RBDXTEST$(tr -dc 'A-Z0-9' </dev/urandom | head -c 12 || true)
    secret=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40 || true)
    mkdir -p "$dir/rgw"
    ceph -c "$conf" auth get-or-create client.rgw.x mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
        > "$dir/rgw/keyring"
    radosgw -c "$conf" -n client.rgw.x --keyring "$dir/rgw/keyring" --rgw-data "$dir/rgw" \
        --rgw-frontends "beast endpoint=127.0.0.1:$rport" --rgw-enable-apis s3,admin \
        2>>"$dir/log/rgw-start.err"
    wait_for 60 "the S3 gateway answering" curl -sf -o /dev/null "http://127.0.0.1:$rport/"
    radosgw-admin -c "$conf" user create --uid=rbdx-test --display-name="rbdx tests" \
        --access-key="$access" --secret-key="$secret" >/dev/null
    printf '%s\n' "RBDX_TEST_S3_URL=http://127.0.0.1:$rport" "RBDX_TEST_S3_ACCESS_KEY=$access" \
        "RBDX_TEST_S3_SECRET_KEY=$secret" > "$dir/rgw.env"
    echo "$dir/rgw.env"
}

case "$action" in
    start) start ;;
    rgw) rgw ;;
    stop) stop ;;
    *) usage ;;
esac
