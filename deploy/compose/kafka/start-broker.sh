#!/bin/sh
# One broker of deploy/compose/production.yml: KAFKA_NODE_ID and KAFKA_HOST from compose.
# The storage is formatted at first start only, with the cluster id the init job generated and
# the admin's SCRAM credential (KIP-900: the one principal that must exist before any broker
# serves); the services' principals are added by kafka-init, over SASL_SSL, as the admin.
set -eu
secrets=/run/visio/kafka
config=/tmp/server.properties
cat /etc/visio/kafka/server.properties > "$config"
printf 'node.id=%s\nadvertised.listeners=INTERNAL://%s:9092\n' "$KAFKA_NODE_ID" "$KAFKA_HOST" >> "$config"
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
    /opt/kafka/bin/kafka-storage.sh format --config "$config" \
        --cluster-id "$(cat "$secrets/cluster-id")" \
        --add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$secrets/admin-password")]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$config"
