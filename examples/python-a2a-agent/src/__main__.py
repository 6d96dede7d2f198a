"""A minimal A2A agent: JSON-RPC `message/send` at POST /, the agent card at
/.well-known/agent.json and /.well-known/agent-card.json. Replace `answer` with your logic."""

import json
import os
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CARD = json.load(open(os.path.join(os.path.dirname(__file__), "..", "AgentCard.json")))


def answer(text: str) -> str:
    return f"You said: {text}"


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path in ("/.well-known/agent.json", "/.well-known/agent-card.json"):
            self._send(200, CARD)
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        except json.JSONDecodeError:
            return self._send(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        if req.get("method") != "message/send":
            return self._send(200, {"jsonrpc": "2.0", "id": req.get("id"), "error": {"code": -32601, "message": "method not found"}})
        parts = req.get("params", {}).get("message", {}).get("parts", [])
        text = " ".join(p.get("text", "") for p in parts if p.get("kind") == "text")
        self._send(200, {"jsonrpc": "2.0", "id": req.get("id"), "result": {
            "kind": "message", "role": "agent", "messageId": str(uuid.uuid4()),
            "parts": [{"kind": "text", "text": answer(text)}]}})


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 5000), Handler).serve_forever()
