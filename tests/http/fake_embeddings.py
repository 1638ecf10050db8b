#!/usr/bin/env python3
"""A loopback embeddings server for the tests (OpenAI-compatible /v1/embeddings and Ollama /api/embed).

Listens on 127.0.0.1 on a free port, prints the port on its first stdout line, and serves until
it receives SIGTERM or has been idle for 120 s. The model name selects the behaviour:
  ok          vectors of the requested size ("dimensions", default 8), a function of the text
  flaky429    every first request of a batch gets 429 with Retry-After: 1, the retry succeeds
  flaky500    the first two requests get 500, then success
  slow        sleeps 3 s before answering (for client time-outs)
  badjson     answers 200 with a body that is not JSON
  wrongdim    answers vectors one component short
  unauth      answers 401 {"error": {"message": "invalid api key"}}
GET /stats returns {"requests": N, "texts": N, "auth": [last Authorization header seen]}.
"""
import hashlib, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"requests": 0, "texts": 0, "auth": None, "seen": set(), "last": time.time(), "n500": 0}
lock = threading.Lock()


def vec(text, dim):
    h = hashlib.sha256(text.encode()).digest()
    return [((h[i % 32] + i) % 97) / 97.0 + 0.01 for i in range(dim)]


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, obj=None, raw=None, headers=()):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            state["last"] = time.time()
            self.reply(200, {"requests": state["requests"], "texts": state["texts"], "auth": state["auth"]})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(n) or b"{}")
        model, texts = req.get("model", "ok"), req.get("input", [])
        dim = int(req.get("dimensions", 8))
        with lock:
            state["requests"] += 1
            state["last"] = time.time()
            state["auth"] = self.headers.get("Authorization")
            key = (model, tuple(texts))
            first = key not in state["seen"]
            state["seen"].add(key)
            if model == "flaky500":
                state["n500"] += 1
                n500 = state["n500"]
        if model == "flaky429" and first:
            return self.reply(429, {"error": {"message": "rate limited"}}, headers=[("Retry-After", "1")])
        if model == "flaky500" and n500 <= 2:
            return self.reply(500, {"error": {"message": "internal error"}})
        if model == "slow":
            time.sleep(3)
        if model == "badjson":
            return self.reply(200, raw=b"{not json")
        if model == "unauth":
            return self.reply(401, {"error": {"message": "invalid api key"}})
        d = dim - 1 if model == "wrongdim" else dim
        with lock:
            state["texts"] += len(texts)
        if self.path.endswith("/api/embed"):
            return self.reply(200, {"model": model, "embeddings": [vec(t, d) for t in texts]})
        data = [{"object": "embedding", "index": i, "embedding": vec(t, d)} for i, t in enumerate(texts)]
        data.reverse()  # the index field, not the order, says which text each vector belongs to
        return self.reply(200, {"object": "list", "data": data, "model": model})


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(srv.server_address[1], flush=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    while time.time() - state["last"] < 120:
        time.sleep(1)
    srv.shutdown()


if __name__ == "__main__":
    main()
