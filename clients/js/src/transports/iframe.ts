// Hidden-iframe ("htmlfile") streaming (docs/protocol.md "iframe"): a never-ending HTML document
// whose `<script>p(obj)</script>` chunks call `parent.<callback>(obj)`. Each connection gets its
// own callback name, so a late script of an old iframe can never deliver into a new connection.
// The parent must be on the server's origin (the iframe's scripts call into it).

import { redact, subURL } from '../http.js';
import type { Envelope, PresenceEvent, Transport, TransportContext, TransportFactory } from '../types.js';

type Callback = (obj: unknown) => void;
const registry: Record<string, Callback> = {};
let serial = 0;

class Iframe implements Transport {
  readonly name = 'iframe' as const;
  private frame: HTMLIFrameElement | null = null;
  private readonly key = 'f' + ++serial;
  private probe: ReturnType<typeof setInterval> | undefined;
  private opened = false;
  /** The server sent its reconnect notice: the document is ending on purpose. */
  private asked = false;
  /** The document's node count at the last probe, and when it last changed. */
  private nodes = 0;
  private heard = 0;

  constructor(private readonly ctx: TransportContext) {}

  start(): void {
    const { ctx } = this;
    (globalThis as unknown as { __comet: Record<string, Callback> }).__comet = registry;
    registry[this.key] = (obj) => this.receive(obj);
    const url = subURL(
      ctx.base,
      ctx.channels,
      { transport: 'iframe', callback: '__comet.' + this.key, since: ctx.position() },
      ctx.token,
    );
    ctx.sink.frame('out', 'GET ' + redact(url) + ' (iframe)');
    const f = (this.frame = document.createElement('iframe'));
    f.hidden = true;
    f.title = 'comet';
    f.setAttribute('aria-hidden', 'true');
    f.src = url;
    // 'load' fires when the document ends: the server closed it, or the request failed.
    f.addEventListener('load', () => this.end());
    // Chrome fires no 'load' when a streaming document breaks off (ERR_INCOMPLETE_CHUNKED_ENCODING),
    // so also watch the document: open once the prelude's `p` exists; ended once it is complete;
    // dead when no node (message script or `<!-- -->` heartbeat) arrived for `heartbeatTimeout`.
    this.probe = setInterval(() => {
      try {
        const w = f.contentWindow as unknown as { p?: unknown } | null;
        const doc = f.contentDocument;
        if (!this.opened && w && typeof w.p === 'function') this.markOpen();
        if (!this.opened || !doc) return;
        if (doc.readyState === 'complete') return this.end();
        const nodes = doc.body?.childNodes.length ?? 0;
        if (nodes !== this.nodes) {
          this.nodes = nodes;
          this.heard = Date.now();
        } else if (Date.now() - this.heard > ctx.options.heartbeatTimeout) this.end('no data or heartbeat in time');
      } catch {
        // not readable (yet, or an error page)
      }
    }, 250);
    (document.body ?? document.documentElement).appendChild(f);
  }

  /** The document is over (or given up on): report why, once. */
  private end(reason?: string): void {
    const f = this.frame;
    if (!f) return;
    let why = reason ?? (this.asked ? 'server asked to reconnect' : this.opened ? 'iframe document ended' : 'iframe failed to load');
    let badCursor = false;
    try {
      const text = f.contentDocument?.body?.textContent ?? '';
      const err = (JSON.parse(text) as { error?: { code: string; message: string } }).error;
      if (err) {
        why = 'iframe: ' + err.message;
        badCursor = err.code === 'bad_cursor';
      }
    } catch {
      // an HTML document (ours) or unreadable: keep the generic reason
    }
    this.stop();
    this.ctx.sink.ended(why, { badCursor });
  }

  private markOpen(): void {
    if (this.opened) return;
    this.opened = true;
    this.heard = Date.now();
    this.ctx.sink.opened();
  }

  private receive(obj: unknown): void {
    if (!this.frame || !obj || typeof obj !== 'object') return;
    const { sink } = this.ctx;
    this.markOpen();
    sink.frame('in', JSON.stringify(obj));
    const o = obj as Envelope & { type?: string; cursor?: string; retry?: number; reconnect?: boolean };
    if (o.type === 'gap') sink.gap(o.channel);
    else if (o.type === 'join' || o.type === 'leave') sink.presence(o.type === 'join', o as unknown as PresenceEvent);
    else if (o.type === 'disconnect') sink.disconnected(o.reconnect !== false);
    else if (o.type === 'unsubscribed') sink.unsubscribed(o.channel);
    else if (o.type === 'reconnect') {
      if (o.cursor) sink.position(o.cursor);
      this.asked = true;
      // Leave the iframe's own script before removing the iframe.
      setTimeout(() => this.end(), 0);
    } else if (typeof o.channel === 'string' && typeof o.id === 'string') sink.message(o);
  }

  stop(): void {
    clearInterval(this.probe);
    delete registry[this.key];
    const f = this.frame;
    this.frame = null;
    f?.remove(); // aborts the document if it is still loading
  }
}

export const iframe: TransportFactory = {
  unavailable: (base) => {
    if (typeof document === 'undefined' || typeof location === 'undefined') return 'no document';
    if (new URL(base, location.href).origin !== location.origin) return 'iframe streaming needs the same origin';
    return null;
  },
  create: (ctx) => new Iframe(ctx),
};
