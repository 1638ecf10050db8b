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
  delay200    answers every request 200 ms after it arrived (the concurrency benchmark; a model of
              a provider whose own compute is hidden in its latency: the reply is encoded during
              those 200 ms, and nothing holds the lock while a request waits)
  jitter      answers after 10..300 ms, varying per request, so replies come back out of order
  failmid     like jitter, but a batch holding a text that contains "POISON" gets 400
  pause429    the 3rd request overall gets 429 with Retry-After: 1; the rest like jitter
  slowfirst   the n-th request since /reset answers after max(0.02, 0.5 - 0.06 (n - 1)) s: early
              requests wait longest, so with several in flight replies come back in reverse order
GET /stats returns {"requests": N, "texts": N, "auth": [last Authorization header seen],
  "max_inflight": most requests being answered at once, "arrivals": [seconds since the first],
  "gap_after_429": seconds from the 429 to the next request's arrival, "replies": embedding
  replies written in full, "completions": [n of each such reply, in the order written]}.
  GET /reset zeroes them. Each connection gets its own thread (ThreadingHTTPServer); vectors are
  written as JSON text directly (vec_json), not through json.dumps of Python floats, each text's
  once (vec_piece keeps them), and a reply goes out as those pieces (sendmsg), not one body.
"""
import hashlib, json, sys, threading, time
from itertools import chain
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"requests": 0, "texts": 0, "auth": None, "seen": set(), "last": time.time(), "n500": 0,
         "inflight": 0, "max_inflight": 0, "arrivals": [], "t0": None, "t429": None, "gap_after_429": None,
         "replies": 0, "completions": []}
lock = threading.Lock()


def vec(text, dim):
    h = hashlib.sha256(text.encode()).digest()
    return [((h[i % 32] + i) % 97) / 97.0 + 0.01 for i in range(dim)]


# vec() as JSON text, fast: component i is one of 97 values, VALS[(h[i % 32] + i) % 97], written as
# json.dumps writes it (repr). Grouped by j = i % 32, column j runs through (h[j] + j + 32k) % 97
# for k = 0, 1, ...: COLS[s] holds that run of strings for each start s, and zip() interleaves the
# 32 columns back into component order in C rather than one Python step per component (128 x 1024
# components per reply took ~100 ms of the GIL the plain way, serialising every reply).
VALS = [repr(r / 97.0 + 0.01) for r in range(97)]
COLS_K = 128  # columns precomputed up to dim 4096; larger dims take the plain way
COLS = [[VALS[(s + 32 * k) % 97] for k in range(COLS_K)] for s in range(97)]


def vec_json(text, dim):
    h = hashlib.sha256(text.encode()).digest()
    if dim <= 0:
        return ""
    k = -(-dim // 32)
    if k > COLS_K:
        return ", ".join(repr(x) for x in vec(text, dim))
    cols = [COLS[(h[j] + j) % 97][:k] for j in range(32)]
    return ", ".join(list(chain.from_iterable(zip(*cols)))[:dim])


# (text, dim) -> b"[...]": each text's vector is encoded once and kept (up to MEMO_MAX of them),
# as a provider's own compute is not what the benchmarks measure; a reply is then a list of
# these pieces, sent with sendmsg, without building a 2.6 MB body per reply.
MEMO_MAX = 20000
memo = {}


def vec_piece(text, dim):
    key = (text, dim)
    v = memo.get(key)
    if v is None:
        v = ("[" + vec_json(text, dim) + "]").encode()
        if len(memo) >= MEMO_MAX:
            memo.clear()
        memo[key] = v
    return v


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, obj=None, raw=None, headers=()):
        self.answered()  # before the first byte goes out: the client may send its next request once it has all of them
        body = raw if raw is not None else json.dumps(obj).encode()
        size = sum(map(len, body)) if isinstance(body, list) else len(body)
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.send_pieces(body if isinstance(body, list) else [body])

    def send_pieces(self, pieces):
        views = [memoryview(x) for x in pieces if x]
        while views:  # sendmsg may take part of them
            try:
                n = self.connection.sendmsg(views[:512])
            except (BrokenPipeError, ConnectionResetError):
                return  # the client went away (a test kills it mid-reply)
            while n and n >= len(views[0]):
                n -= len(views.pop(0))
            if n:
                views[0] = views[0][n:]

    def do_GET(self):
        with lock:
            state["last"] = time.time()
            if self.path.endswith("/reset"):
                state.update(requests=0, texts=0, replies=0, completions=[], max_inflight=0, arrivals=[], t0=None, t429=None, gap_after_429=None)
            self.reply(200, {"requests": state["requests"], "texts": state["texts"], "auth": state["auth"],
                             "max_inflight": state["max_inflight"], "arrivals": state["arrivals"],
                             "gap_after_429": state["gap_after_429"], "replies": state["replies"],
                             "completions": state["completions"],
                             "t429": None if state["t429"] is None else state["t429"] - state["t0"]})

    def answered(self):
        # A request is in flight from its arrival until its reply starts (max_inflight): counting it
        # down after the reply was sent raced with the client's next request, which can arrive
        # before this thread runs again, so a concurrency-1 client could show 2 in flight.
        if getattr(self, "in_flight", False):
            self.in_flight = False
            with lock:
                state["inflight"] -= 1

    def do_POST(self):
        with lock:
            state["inflight"] += 1
            state["max_inflight"] = max(state["max_inflight"], state["inflight"])
        self.in_flight = True
        try:
            self.post()
        finally:
            self.answered()

    def post(self):
        arrived = time.monotonic()
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
            now = time.time()
            if state["t0"] is None:
                state["t0"] = now
            state["arrivals"].append(round(now - state["t0"], 4))
            if state["t429"] is not None and state["gap_after_429"] is None:
                state["gap_after_429"] = now - state["t429"]
            nreq = state["requests"]
            if model == "pause429" and nreq == 3:
                state["t429"] = now
            if model == "flaky500":
                state["n500"] += 1
                n500 = state["n500"]
        if model == "flaky429" and first:
            return self.reply(429, {"error": {"message": "rate limited"}}, headers=[("Retry-After", "1")])
        if model == "flaky500" and n500 <= 2:
            return self.reply(500, {"error": {"message": "internal error"}})
        if model == "pause429" and nreq == 3:
            return self.reply(429, {"error": {"message": "rate limited"}}, headers=[("Retry-After", "1")])
        if model in ("jitter", "failmid", "pause429"):
            time.sleep(0.01 + (hashlib.sha256(str(nreq).encode()).digest()[0] / 255.0) * 0.29)
        if model == "slowfirst":
            time.sleep(max(0.02, 0.5 - 0.06 * (nreq - 1)))
        if model == "failmid" and any("POISON" in t for t in texts):
            return self.reply(400, {"error": {"message": "bad input"}})
        if model == "slow":
            time.sleep(3)
        if model == "badjson":
            return self.reply(200, raw=b"{not json")
        if model == "unauth":
            return self.reply(401, {"error": {"message": "invalid api key"}})
        d = dim - 1 if model == "wrongdim" else dim
        with lock:
            state["texts"] += len(texts)
        body = []  # the reply as pieces (vec_piece)
        if self.path.endswith("/api/embed"):
            body.append(b'{"model": %s, "embeddings": [' % json.dumps(model).encode())
            for i, t in enumerate(texts):
                body += [b", "] * (i > 0) + [vec_piece(t, d)]
            body.append(b"]}")
        else:  # reversed: the index field, not the order, says which text each vector belongs to
            body.append(b'{"object": "list", "data": [')
            for k, (i, t) in enumerate(reversed(list(enumerate(texts)))):
                body += [b'%s{"object": "embedding", "index": %d, "embedding": ' % (b", " * (k > 0), i), vec_piece(t, d), b"}"]
            body.append(b'], "model": %s}' % json.dumps(model).encode())
        if model == "delay200":  # answered 200 ms after it arrived, the encoding above included
            time.sleep(max(0.0, arrived + 0.2 - time.monotonic()))
        self.reply(200, raw=body)
        with lock:
            state["replies"] += 1
            state["completions"].append(nreq)

def main():
    ThreadingHTTPServer.request_queue_size = 128
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(srv.server_address[1], flush=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    while time.time() - state["last"] < 120:
        time.sleep(1)
    srv.shutdown()


if __name__ == "__main__":
    main()
