#!/bin/sh
# Post an email-verified asset event with curl and jq (docs: event-driven).
# Usage: AIRFLOW=https://airflow.example.com AIRFLOW_USER=... AIRFLOW_PASSWORD=... sh post_event.sh client_1
set -eu
# [START howto_post_event_curl]
TOKEN=$(curl -sf -X POST "$AIRFLOW/auth/token" -H 'Content-Type: application/json' \
  -d "{\"username\": \"$AIRFLOW_USER\", \"password\": \"$AIRFLOW_PASSWORD\"}" | jq -r .access_token)
URI=sfox://api.sfox.com/email-verified
ASSET_ID=$(curl -sf -G "$AIRFLOW/api/v2/assets" --data-urlencode "uri_pattern=$URI" \
  -H "Authorization: Bearer $TOKEN" | jq ".assets[] | select(.uri == \"$URI\") | .id")
curl -sf -X POST "$AIRFLOW/api/v2/assets/events" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' \
  -d "{\"asset_id\": $ASSET_ID, \"extra\": {\"user_ids\": [\"$1\"]}}"
# [END howto_post_event_curl]
