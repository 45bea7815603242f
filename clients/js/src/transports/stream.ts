// HTTP streaming (docs/protocol.md "stream"): one long `fetch` whose body is NDJSON, read as it
// arrives. Heartbeats are empty lines every 15 s, so silence longer than `heartbeatTimeout`
// means the connection is dead even if no error was raised (a NAT or proxy dropped it).

import { errorOf, redact, subURL } from '../http.js';
import type { Envelope, PresenceEvent, Transport, TransportContext, TransportFactory } from '../types.js';

class Stream implements Transport {
  readonly name = 'stream' as const;
  private readonly abort = new AbortController();
  private stopped = false;
  private watchdog: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly ctx: TransportContext) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.watchdog);
    this.abort.abort();
  }

  private arm(): void {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.end('no data or heartbeat in time'), this.ctx.options.heartbeatTimeout);
  }

  private end(reason: string, retry?: number): void {
    if (this.stopped) return;
    this.stop();
    this.ctx.sink.ended(reason, { retry });
  }

  private async run(): Promise<void> {
    const { ctx } = this;
    // prelude=1: 2 KiB of padding at once, so a proxy that holds the response until it has some
    // body bytes lets it through, and the connection counts as open without waiting for a message.
    const url = subURL(ctx.base, ctx.channels, { transport: 'stream', since: ctx.position(), prelude: 1 }, ctx.token);
    ctx.sink.frame('out', 'GET ' + redact(url));
    let opened = false;
    try {
      const res = await ctx.fetch(url, {
        headers: ctx.token ? { authorization: 'Bearer ' + ctx.token } : {},
        cache: 'no-store',
        signal: this.abort.signal,
      });
      if (!res.ok || !res.body) {
        const err = await errorOf(res);
        if (this.stopped) return;
        this.stop();
        ctx.sink.ended(err.message, { retry: err.retry, badCursor: err.code === 'bad_cursor' });
        return;
      }
      if (this.stopped) return;
      opened = true;
      this.arm();
      ctx.sink.opened();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (this.stopped) return;
        if (done) break;
        this.arm();
        buf += decoder.decode(value, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue; // heartbeat or prelude
          this.line(line);
          if (this.stopped) return;
        }
      }
      this.end('stream ended');
    } catch (e) {
      if (this.stopped) return;
      this.end((opened ? 'stream broke: ' : 'stream failed: ') + String((e as Error)?.message ?? e));
    }
  }

  private line(line: string): void {
    const { sink } = this.ctx;
    sink.frame('in', line);
    let obj: Envelope & { type?: string; cursor?: string; retry?: number; reconnect?: boolean };
    try {
      obj = JSON.parse(line);
    } catch {
      return;
    }
    if (obj.type === 'gap') sink.gap(obj.channel);
    else if (obj.type === 'join' || obj.type === 'leave') sink.presence(obj.type === 'join', obj as unknown as PresenceEvent);
    else if (obj.type === 'disconnect') sink.disconnected(obj.reconnect !== false);
    else if (obj.type === 'unsubscribed') sink.unsubscribed(obj.channel);
    else if (obj.type === 'reconnect') {
      if (obj.cursor) sink.position(obj.cursor);
      this.end('server asked to reconnect', typeof obj.retry === 'number' ? obj.retry : undefined);
    } else if (typeof obj.channel === 'string' && typeof obj.id === 'string') sink.message(obj);
  }
}

export const stream: TransportFactory = {
  unavailable: () =>
    typeof fetch === 'function' && typeof ReadableStream === 'function' && typeof TextDecoder === 'function'
      ? null
      : 'streaming fetch is not available',
  create: (ctx) => new Stream(ctx),
};
