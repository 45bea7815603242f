#!/usr/bin/env python3
"""A faster GRIP origin for Pushpin (stdlib asyncio, keep-alive): the same answers as
../shared/peers/pushpin-origin.py (the shared recipe, thread per request), which turns connection bursts into
502s from Pushpin's proxy. Listens on 127.0.0.1:PORT (default 8091).
  GET  /stream?ch=X  -> Grip-Hold: stream   (plain text stream)
  GET  /sse?ch=X     -> Grip-Hold: stream   (text/event-stream, keep-alive comments)
  GET  /lp?ch=X      -> Grip-Hold: response (long-poll, 30 s timeout body)
  POST /ws?ch=X      -> WebSocket-over-HTTP: OPEN + subscribe to X; PING -> PONG
"""
import asyncio
import json
import sys
from urllib.parse import parse_qs, urlparse

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8091


def ws_event(typ, content=None):
    if content is None:
        return typ.encode() + b"\r\n"
    return f"{typ} {len(content):x}\r\n".encode() + content + b"\r\n"


def parse_ws_events(body):
    out, i = [], 0
    while i < len(body):
        j = body.index(b"\r\n", i)
        line = body[i:j].decode()
        i = j + 2
        if " " in line:
            typ, hexlen = line.split(" ", 1)
            n = int(hexlen, 16)
            out.append((typ, body[i:i + n]))
            i += n + 2
        else:
            out.append((line, b""))
    return out


def response(code, headers, body):
    reason = {200: "OK", 404: "Not Found"}.get(code, "OK")
    head = [f"HTTP/1.1 {code} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def answer(method, target, headers, body):
    u = urlparse(target)
    ch = parse_qs(u.query).get("ch", ["test"])[0]
    if method == "GET" and u.path == "/stream":
        return response(200, {"Content-Type": "text/plain", "Grip-Hold": "stream", "Grip-Channel": ch},
                        b"[stream open]\n")
    if method == "GET" and u.path == "/sse":
        return response(200, {"Content-Type": "text/event-stream", "Grip-Hold": "stream", "Grip-Channel": ch,
                              "Grip-Keep-Alive": ":\\n\\n; format=cstring; timeout=20"}, b":ok\n\n")
    if method == "GET" and u.path == "/lp":
        return response(200, {"Content-Type": "text/plain", "Grip-Hold": "response", "Grip-Channel": ch,
                              "Grip-Timeout": "30"}, b"timeout\n")
    if method == "POST" and headers.get("content-type", "").startswith("application/websocket-events"):
        out = b""
        for typ, content in parse_ws_events(body):
            if typ == "OPEN":
                out += ws_event("OPEN")
                out += ws_event("TEXT", b"c:" + json.dumps({"type": "subscribe", "channel": ch}).encode())
            elif typ == "TEXT":
                out += ws_event("TEXT", b"m:echo: " + content)
            elif typ == "PING":
                out += ws_event("PONG", content)
            elif typ == "CLOSE":
                out += ws_event("CLOSE", content)
        return response(200, {"Content-Type": "application/websocket-events", "Sec-WebSocket-Extensions": "grip"},
                        out)
    return response(404, {"Content-Type": "text/plain"}, b"not found\n")


async def serve(reader, writer):
    try:
        while True:  # one request per turn; ends when the proxy closes the connection
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
            body = await reader.readexactly(n) if n else b""
            writer.write(answer(method, target, headers, body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT, backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
