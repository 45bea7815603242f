// Short polling and long polling (docs/protocol.md "poll", "longpoll"): a loop of ordinary GETs,
// each sending the position as `?since=` and getting back messages and the next position.

import { CometError, pollOnce, redact, subURL } from '../http.js';
import type { Transport, TransportContext, TransportFactory, TransportName } from '../types.js';

/** The batch size of the server (`max_batch`): a full batch means more is waiting. */
const FULL_BATCH = 256;

class Polling implements Transport {
  private readonly abort = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private first = true;
  /** This poller's id in presence channels, from the last answer: sent back as `?client=`. */
  private client: string | undefined;

  constructor(readonly name: TransportName, private readonly ctx: TransportContext) {}

  start(): void {
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
  }

  /** Polls now (a page that became visible again should not wait out the interval). */
  nudge(): void {
    if (this.name === 'poll' && this.timer !== undefined && !this.stopped) {
      clearTimeout(this.timer);
      this.timer = undefined;
      void this.loop();
    }
  }

  private async loop(): Promise<void> {
    const { ctx } = this;
    // The first request of a connection answers at once (timeout=0), so the client knows the
    // connection works without waiting out a long poll.
    const long = this.name === 'longpoll' && !this.first;
    const timeout = this.name === 'longpoll' ? (long ? ctx.options.longpollTimeout : 0) : undefined;
    const params = { transport: this.name, since: ctx.position(), timeout, client: this.client };
    const url = subURL(ctx.base, ctx.channels, params, ctx.token);
    ctx.sink.frame('out', 'GET ' + redact(url));
    let answer;
    try {
      answer = await pollOnce(ctx.fetch, url, ctx.token, this.abort.signal);
    } catch (e) {
      if (this.stopped) return;
      const err = e as CometError;
      ctx.sink.ended(err.message, { retry: err.retry, badCursor: err.code === 'bad_cursor' });
      return;
    }
    if (this.stopped) return;
    ctx.sink.frame('in', answer.raw);
    if (this.first) {
      this.first = false;
      ctx.sink.opened();
    }
    if (answer.client) this.client = answer.client;
    for (const ch of answer.unsubscribed ?? []) ctx.sink.unsubscribed(ch);
    if (answer.disconnect) {
      // The server API disconnected this user: stop, or reconnect as after any end.
      ctx.sink.disconnected(answer.disconnect.reconnect !== false);
      if (!this.stopped) ctx.sink.ended('disconnected by the server');
      return;
    }
    for (const ch of answer.gaps) ctx.sink.gap(ch);
    for (const p of answer.presence) if (typeof p.channel === 'string') ctx.sink.presence(p.type === 'join', p);
    for (const m of answer.messages) {
      if (this.stopped) return;
      ctx.sink.message(m);
    }
    if (this.stopped) return;
    ctx.sink.position(answer.cursor);
    const again = answer.messages.length >= FULL_BATCH || this.name === 'longpoll';
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.loop();
    }, again ? 0 : ctx.options.pollInterval);
  }
}

const hasFetch = (): string | null => (typeof fetch === 'function' ? null : 'fetch is not available');

export const poll: TransportFactory = {
  unavailable: hasFetch,
  create: (ctx) => new Polling('poll', ctx),
};

export const longpoll: TransportFactory = {
  unavailable: hasFetch,
  create: (ctx) => new Polling('longpoll', ctx),
};
