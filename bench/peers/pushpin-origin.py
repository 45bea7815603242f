#!/usr/bin/env python3
"""Tiny GRIP origin for Pushpin (stdlib only). Listens on 127.0.0.1:8091.
  GET  /stream?ch=X   -> Grip-Hold: stream   (chunked text stream)
  GET  /sse?ch=X      -> Grip-Hold: stream   (text/event-stream, keep-alive comments)
  GET  /lp?ch=X       -> Grip-Hold: response (long-poll; 304-ish timeout body after Grip-Timeout)
  POST /ws?ch=X       -> WebSocket-over-HTTP (route flag over_http): OPEN + subscribe to X
Publish with:  curl -d '{"items":[...]}' http://127.0.0.1:5561/publish/   or  pushpin-publish X 'text'
"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8091
DEBUG = bool(__import__("os").environ.get("ORIGIN_DEBUG"))

def parse_ws_events(body: bytes):
    """Parse application/websocket-events: 'TYPE[ hexlen]\r\n[content\r\n]'"""
    out, i = [], 0
    while i < len(body):
        j = body.index(b"\r\n", i)
        line = body[i:j].decode()
        i = j + 2
        if " " in line:
            typ, hexlen = line.split(" ", 1)
            n = int(hexlen, 16)
            content = body[i:i + n]
            i += n + 2
        else:
            typ, content = line, b""
        out.append((typ, content))
    return out

def ws_event(typ, content=None):
    if content is None:
        return typ.encode() + b"\r\n"
    return f"{typ} {len(content):x}\r\n".encode() + content + b"\r\n"

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def _send(self, code, headers, body: bytes):
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urlparse(self.path)
        ch = parse_qs(u.query).get("ch", ["test"])[0]
        if u.path == "/stream":
            self._send(200, {"Content-Type": "text/plain", "Grip-Hold": "stream",
                             "Grip-Channel": ch}, b"[stream open]\n")
        elif u.path == "/sse":
            self._send(200, {"Content-Type": "text/event-stream", "Grip-Hold": "stream",
                             "Grip-Channel": ch,
                             # Pushpin sends this every 20s when idle
                             "Grip-Keep-Alive": ":\\n\\n; format=cstring; timeout=20"},
                       b":ok\n\n")
        elif u.path == "/lp":
            self._send(200, {"Content-Type": "text/plain", "Grip-Hold": "response",
                             "Grip-Channel": ch, "Grip-Timeout": "30"},
                       b"timeout\n")        # body returned if nothing published in 30s
        else:
            self._send(404, {"Content-Type": "text/plain"}, b"not found\n")

    def do_POST(self):
        u = urlparse(self.path)
        ch = parse_qs(u.query).get("ch", ["test"])[0]
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        if self.headers.get("Content-Type", "").startswith("application/websocket-events"):
            out = b""
            if DEBUG: print("ws-over-http in:", dict(self.headers), body, file=sys.stderr, flush=True)
            for typ, content in parse_ws_events(body):
                if typ == "OPEN":
                    out += ws_event("OPEN")
                    ctl = json.dumps({"type": "subscribe", "channel": ch}).encode()
                    out += ws_event("TEXT", b"c:" + ctl)
                elif typ == "TEXT":
                    # with the grip extension, content for the client needs the "m:" prefix
                    # (default message-prefix); "c:" marks control messages. Unprefixed = dropped.
                    out += ws_event("TEXT", b"m:echo: " + content)
                elif typ == "PING":          # over-HTTP: pings are forwarded; origin answers
                    out += ws_event("PONG", content)
                elif typ == "CLOSE":
                    out += ws_event("CLOSE", content)
                # PONG/DISCONNECT/BINARY: nothing
            self._send(200, {"Content-Type": "application/websocket-events",
                             "Sec-WebSocket-Extensions": "grip"}, out)
        else:
            self._send(404, {"Content-Type": "text/plain"}, b"not found\n")

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096   # default 5 is too small for connection bursts

Server(("127.0.0.1", PORT), H).serve_forever()
