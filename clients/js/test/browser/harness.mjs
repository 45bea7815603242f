// What the browser tests share: a real `comet serve` on 127.0.0.1:0, a small HTTP proxy in front
// of it (it can refuse WebSocket upgrades like a strict corporate proxy, and cut every connection
// like a network outage), and Debian's Chromium driven by playwright-core. Every process started
// here is stopped by its PID; every wait is bounded.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repo = fileURLToPath(new URL('../../../../', import.meta.url));
const COMET = process.env.COMET_BIN ?? repo + 'target/debug/comet';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** Resolves `promise` or rejects after `ms` with `what`. */
export function within(ms, what, promise) {
  let t;
  return Promise.race([
    promise.finally(() => clearTimeout(t)),
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

/** Starts `comet serve --listen 127.0.0.1:0` (plus `args`) with the admin API on. */
export async function startComet(args = []) {
  if (!existsSync(COMET)) throw new Error(`${COMET} not found: run \`cargo build -p comet\` first (or set COMET_BIN)`);
  const child = spawn(COMET, ['serve', '--listen', '127.0.0.1:0', ...args], {
    // Heartbeats every second, so the clients' heartbeatTimeout can be short in the tests.
    env: { ...process.env, COMET_ADMIN_API: 'true', COMET_HEARTBEAT_SECS: '1', RUST_LOG: process.env.RUST_LOG ?? 'warn,comet=info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const url = await within(
    15000,
    'comet to print its address',
    new Promise((resolve, reject) => {
      const onData = (d) => {
        log += d;
        const m = /comet listening on (http:\/\/127\.0\.0\.1:\d+)\//.exec(log);
        if (m) resolve(m[1]);
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.on('exit', (code) => reject(new Error(`comet exited (${code}) before listening:\n${log}`)));
    }),
  );
  return {
    url,
    pid: child.pid,
    async publish(channel, data, event) {
      const res = await fetch(`${url}/pub/${channel}${event ? '?event=' + event : ''}`, { method: 'POST', body: data });
      if (res.status !== 201) throw new Error(`publish answered ${res.status}`);
      return (await res.json()).id;
    },
    /** Ends every subscriber connection the way a restart would; history is kept. */
    async disconnectAll() {
      const res = await fetch(`${url}/admin/disconnect`, { method: 'POST' });
      if (res.status !== 202) throw new Error(`admin/disconnect answered ${res.status}`);
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      process.kill(child.pid, 'SIGTERM');
      await within(10000, 'comet to exit', exited).catch(() => process.kill(child.pid, 'SIGKILL'));
    },
  };
}

/** [`startComet`] with the settings `toml` in a config file of its own, removed by `stop`. */
export async function startCometWith(toml, args = []) {
  const dir = mkdtempSync(join(tmpdir(), 'comet-browser-'));
  const config = join(dir, 'comet.toml');
  writeFileSync(config, toml);
  const comet = await startComet(['--config', config, ...args]).catch((e) => {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  const stop = comet.stop;
  comet.stop = async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  };
  return comet;
}

const TEST_PAGE = '<!doctype html><meta charset="utf-8"><title>comet.js test</title><link rel="icon" href="data:,"><script src="/comet.js"></script><body></body>';

/**
 * A proxy on 127.0.0.1:0 in front of `target`: it forwards requests (streaming both ways) and
 * WebSocket upgrades, serves a blank test page at `/__test.html`, and can `refuseUpgrades`
 * (403, as a proxy that blocks WebSocket) or `cut(ms)` (destroy every connection and refuse new
 * ones for `ms`: a network outage).
 */
export async function startProxy(target, { refuseUpgrades = false } = {}) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  let down = false;
  const track = (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };
  const server = http.createServer((req, res) => {
    if (down) return req.socket.destroy();
    // COMET_JS_DIST=1: serve the bundle from clients/js/dist rather than the one embedded in the
    // server binary, to iterate on the client without rebuilding the server.
    if (process.env.COMET_JS_DIST === '1' && /^\/comet\.m?js$/.test(req.url)) {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(readFileSync(new URL('../../dist' + req.url, import.meta.url)));
    }
    if (req.url === '/__test.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(TEST_PAGE);
    }
    const up = http.request({ host: hostname, port, method: req.method, path: req.url, headers: req.headers, agent: false }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      res.flushHeaders(); // like a real proxy: headers go out at once, not with the first body bytes
      ur.pipe(res);
    });
    up.on('socket', track);
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  server.on('connection', track);
  server.on('upgrade', (req, socket, head) => {
    track(socket);
    if (down || refuseUpgrades) {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 25\r\nconnection: close\r\n\r\nWebSocket is not allowed\n');
      return;
    }
    const up = net.connect(Number(port), hostname, () => {
      let head1 = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) head1 += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(head1 + '\r\n');
      if (head.length) up.write(head);
      socket.pipe(up);
      up.pipe(socket);
    });
    track(up);
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
    socket.on('close', () => up.destroy());
    up.on('close', () => socket.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Destroys every open connection and refuses new ones for `ms`. */
    cut(ms) {
      down = true;
      for (const s of sockets) s.destroy();
      setTimeout(() => {
        down = false;
      }, ms);
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Launches Debian's Chromium (no download) with a fresh profile (playwright's default). */
export async function launch() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium (scripts/test does)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30000,
  });
}

/** A page at `url` that records console errors and page errors into `errors`. */
export async function openPage(context, url) {
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.setDefaultTimeout(20000);
  await page.goto(url);
  return { page, errors };
}

/** Waits (bounded) until `fn` evaluated in the page is truthy. */
export function waitIn(page, what, fn, arg, ms = 20000) {
  return within(ms + 1000, what, page.waitForFunction(fn, arg, { timeout: ms, polling: 50 }));
}
