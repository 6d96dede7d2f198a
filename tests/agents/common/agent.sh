#!/bin/sh
# A tiny A2A-style agent for tests: answers one JSON-RPC request per connection (run under
# `nc -ll -e`), echoing the request id and saying who and which version it is.
read -r _method _path _proto
len=0
while read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in [Cc]ontent-[Ll]ength:*) len=${line#*: } ;; esac
done
body=""
if [ "$len" -gt 0 ] 2>/dev/null; then body=$(dd bs=1 count="$len" 2>/dev/null); fi
id=$(printf '%s' "$body" | sed -n 's/.*"id"[ ]*:[ ]*"\{0,1\}\([^",}]*\).*/\1/p')
resp="{\"jsonrpc\":\"2.0\",\"id\":\"${id}\",\"result\":{\"kind\":\"message\",\"role\":\"agent\",\"parts\":[{\"kind\":\"text\",\"text\":\"hello from ${AGENT_NAME} ${AGENT_VERSION}\"}]}}"
printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#resp}" "$resp"
