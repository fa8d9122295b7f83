#!/bin/sh
# Starts HAProxy in the kube2haproxy pod: the `haproxy` container runs this file from the
# haproxy-bootstrap ConfigMap, mounted at /bootstrap (deploy/base/daemonset.yaml).
#
# /etc/haproxy and /run/haproxy are the volume shared with the controller container, which writes
# haproxy.cfg and maps/ in the first and drives HAProxy through the master socket in the second.
# The paths are the controller's defaults when attached (--master-socket /run/haproxy/master.sock):
# config /etc/haproxy/haproxy.cfg, map files in maps/ beside it, the runtime API socket admin.sock
# beside the master socket (haproxy/bootstrap.cfg). tests/test_deploy.py checks that they agree.
set -eu

# Only a new pod starts from the bootstrap config, which serves nothing until the controller has
# synced the cluster and reloads HAProxy with the real one. A restarted container finds the
# controller's last good config in the volume and serves it at once.
if [ ! -e /etc/haproxy/haproxy.cfg ]; then
    cp /bootstrap/bootstrap.cfg /etc/haproxy/haproxy.cfg
fi
mkdir -p /etc/haproxy/maps

# -W: master-worker (a reload through the master CLI starts new workers and keeps the listening
# sockets); -db: foreground, messages to stderr; -S: the master CLI the controller uses.
#
# exec: HAProxy's master replaces this shell as the container's main process, the one the runtime
# sends the stop signal to (the haproxy image's STOPSIGNAL is SIGUSR1, a soft stop: listeners
# close, connections finish within terminationGracePeriodSeconds), as PID 1 of the container: it
# handles the signals it is sent and reaps its own workers.
exec haproxy -W -db -S /run/haproxy/master.sock,level,admin,mode,600 -f /etc/haproxy/haproxy.cfg
