#!/bin/sh
# The hello agent: answers one HTTP request on stdin/stdout (run under `nc -ll -e`).
#   GET  /.well-known/agent.json, /.well-known/agent-card.json   the agent card
#   POST /   A2A JSON-RPC message/send: greets and repeats the text of the message
read -r method path _proto
len=0
while read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in [Cc]ontent-[Ll]ength:*) len=${line#*: } ;; esac
done
body=""
if [ "$len" -gt 0 ] 2>/dev/null; then body=$(dd bs=1 count="$len" 2>/dev/null); fi

reply() { # status, body
  printf 'HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "$1" "${#2}" "$2"
}

case "$method $path" in
  "GET /.well-known/agent.json"|"GET /.well-known/agent-card.json")
    reply "200 OK" "$(cat /app/AgentCard.json)" ;;
  "POST /"|"POST "|"POST /?"*)
    id=$(printf '%s' "$body" | sed -n 's/.*"id"[ ]*:[ ]*"\{0,1\}\([^",}]*\).*/\1/p')
    text=$(printf '%s' "$body" | sed -n 's/.*"text"[ ]*:[ ]*"\([^"]*\)".*/\1/p')
    answer="${GREETING:-Hello} from ${AGENT_NAME:-hello-agent}! You said: ${text:-nothing}"
    reply "200 OK" "{\"jsonrpc\":\"2.0\",\"id\":\"${id}\",\"result\":{\"kind\":\"message\",\"role\":\"agent\",\"messageId\":\"hello-${id}\",\"parts\":[{\"kind\":\"text\",\"text\":\"${answer}\"}]}}" ;;
  *)
    reply "404 Not Found" '{"error":"not found: GET /.well-known/agent-card.json or POST / (JSON-RPC message/send)"}' ;;
esac
