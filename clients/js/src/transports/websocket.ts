// WebSocket, subprotocol comet.v1 (docs/protocol.md "ws"). One bare `/ws` socket; channels are
// subscribed by command, each with its own cursor, so channels can come and go without a
// reconnect, and publishes go over the same socket with a `ref` answered by an `ack`.

import { CometError, query } from '../http.js';
import type { Envelope, PresenceEvent, PublishResult, Transport, TransportContext, TransportFactory } from '../types.js';

interface Pending {
  resolve: (r: PublishResult) => void;
  reject: (e: Error) => void;
  channel: string;
}

interface Frame extends Partial<Envelope> {
  type?: string;
  ref?: string;
  recovered?: boolean;
  code?: string;
  message?: string;
  reconnect?: boolean;
}

class Ws implements Transport {
  readonly name = 'websocket' as const;
  private ws: WebSocket | null = null;
  private open = false;
  private ref = 0;
  private readonly pending = new Map<string, Pending>();
  /** Channels this client asked to leave: their `unsubscribed` answers are expected; any other
   *  is the server ending a subscription. */
  private readonly leaving = new Set<string>();
  /** `ref` of each subscribe command → its channel, so an `error` answer names the channel. */
  private readonly subscribing = new Map<string, string>();
  private pinger: ReturnType<typeof setInterval> | undefined;
  private heard = Date.now();

  constructor(private readonly ctx: TransportContext) {}

  start(): void {
    const { ctx } = this;
    const url = ctx.base.replace(/^http/, 'ws') + '/ws' + query({ token: ctx.token });
    ctx.sink.frame('out', 'GET ' + url.replace(/([?&]token=)[^&]*/, '$1…') + ' (Upgrade: websocket, comet.v1)');
    const ws = (this.ws = new WebSocket(url, 'comet.v1'));
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.open = true;
      this.heard = Date.now();
      ctx.sink.opened();
      this.subscribe(ctx.channels);
      // Our own pings (every half of heartbeatTimeout) find a dead socket that no error reports.
      const limit = ctx.options.heartbeatTimeout;
      this.pinger = setInterval(() => {
        if (Date.now() - this.heard > limit) return this.fail('no answer to pings in time');
        this.send({ type: 'ping' });
      }, limit / 2);
    };
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      this.heard = Date.now();
      this.receive(String(e.data));
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      const why = this.open
        ? `WebSocket closed (${e.code}${e.reason ? ' ' + e.reason : ''})`
        : `WebSocket failed to open (${e.code}; refused, blocked or no server)`;
      this.fail(why);
    };
  }

  private fail(why: string): void {
    this.stop();
    this.ctx.sink.ended(why);
  }

  stop(): void {
    clearInterval(this.pinger);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= 1) ws.close(1000);
    for (const p of this.pending.values()) p.reject(new CometError('disconnected', 'the WebSocket closed before the ack'));
    this.pending.clear();
  }

  private send(obj: object): void {
    const text = JSON.stringify(obj);
    this.ctx.sink.frame('out', text);
    this.ws?.send(text);
  }

  private subscribe(channels: readonly string[]): void {
    const position = new Map<string, string>();
    for (const entry of this.ctx.position().split(',')) {
      const eq = entry.indexOf('=');
      if (eq > 0) position.set(entry.slice(0, eq), entry.slice(eq + 1));
    }
    for (const channel of channels) {
      const ref = 's' + ++this.ref;
      this.subscribing.set(ref, channel);
      this.send({ type: 'subscribe', channel, since: position.get(channel), ref });
    }
  }

  update(added: readonly string[], removed: readonly string[]): boolean {
    if (!this.open) return false;
    for (const channel of removed) {
      this.leaving.add(channel);
      this.send({ type: 'unsubscribe', channel });
    }
    this.subscribe(added);
    return true;
  }

  publish(channel: string, data: string, event?: string): Promise<PublishResult> {
    return new Promise((resolve, reject) => {
      const ref = 'p' + ++this.ref;
      this.pending.set(ref, { resolve, reject, channel });
      this.send({ type: 'publish', channel, event, data, ref });
    });
  }

  private receive(text: string): void {
    const { sink } = this.ctx;
    sink.frame('in', text);
    let f: Frame;
    try {
      f = JSON.parse(text) as Frame;
    } catch {
      return;
    }
    switch (f.type) {
      case 'message':
        if (typeof f.channel === 'string' && typeof f.id === 'string') sink.message(f as Envelope);
        break;
      case 'join':
      case 'leave':
        if (typeof f.channel === 'string') sink.presence(f.type === 'join', f as unknown as PresenceEvent);
        break;
      case 'subscribed':
        for (const [ref, channel] of this.subscribing) if (channel === f.channel) this.subscribing.delete(ref);
        if (f.recovered === false && f.channel) sink.gap(f.channel);
        break;
      case 'ack': {
        const p = f.ref !== undefined ? this.pending.get(f.ref) : undefined;
        if (p && f.ref !== undefined && typeof f.id === 'string') {
          this.pending.delete(f.ref);
          p.resolve({ channel: p.channel, id: f.id });
        }
        break;
      }
      case 'error': {
        const channel = f.ref !== undefined ? this.subscribing.get(f.ref) : undefined;
        const err = new CometError(f.code ?? 'error', (channel ? `subscribe ${channel}: ` : '') + (f.message ?? 'error'));
        const p = f.ref !== undefined ? this.pending.get(f.ref) : undefined;
        if (channel !== undefined) this.subscribing.delete(f.ref!);
        if (p && f.ref !== undefined) {
          this.pending.delete(f.ref);
          p.reject(err);
        } else if (err.code === 'bad_cursor') {
          this.stop();
          sink.ended('server error: ' + err.message, { badCursor: true });
        } else sink.error(err);
        break;
      }
      case 'unsubscribed':
        if (typeof f.channel !== 'string') break;
        if (this.leaving.delete(f.channel)) break; // the answer to our own `unsubscribe`
        sink.unsubscribed(f.channel);
        break;
      case 'disconnect':
        // The close (4010) follows; with `reconnect: false` the client stops first.
        sink.disconnected(f.reconnect !== false);
        break;
      default:
        break; // pong
    }
  }
}

export const websocket: TransportFactory = {
  unavailable: () => (typeof WebSocket === 'function' ? null : 'WebSocket is not available'),
  create: (ctx) => new Ws(ctx),
};
