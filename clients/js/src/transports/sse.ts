// Server-Sent Events through the browser's EventSource (docs/protocol.md "sse").
//
// The client asks for `?envelope=1`, so every event's data is the JSON envelope (channel, id,
// event, data, time) whatever the number of channels. The browser's own reconnection is not used:
// on any error the EventSource is closed and the client reconnects with its backoff and its own
// position, so a restarted server is not hit by every client at the same `retry:` instant.

import { redact, subURL } from '../http.js';
import type { Envelope, PresenceEvent, Transport, TransportContext, TransportFactory } from '../types.js';

class Sse implements Transport {
  readonly name = 'sse' as const;
  private es: EventSource | null = null;
  private opened = false;

  constructor(private readonly ctx: TransportContext) {}

  start(): void {
    const { ctx } = this;
    const url = subURL(ctx.base, ctx.channels, { envelope: 1, since: ctx.position() }, ctx.token);
    ctx.sink.frame('out', 'GET ' + redact(url) + ' (EventSource)');
    const es = (this.es = new EventSource(url));
    es.onopen = () => {
      this.opened = true;
      ctx.sink.opened();
    };
    const onEvent = (e: MessageEvent) => {
      if (this.es !== es) return;
      const text = String(e.data);
      ctx.sink.frame('in', `event: ${e.type}\nid: ${e.lastEventId}\ndata: ${text}`);
      let env: Envelope;
      try {
        env = JSON.parse(text) as Envelope;
      } catch {
        return; // not an envelope: not from a Comet server with ?envelope=1
      }
      if (env && typeof env.channel === 'string' && typeof env.id === 'string') ctx.sink.message(env);
    };
    es.onmessage = onEvent;
    // A named event reaches only listeners of its name (HTML Standard §9.2.6).
    for (const name of ctx.events) if (name !== 'message') es.addEventListener(name, onEvent);
    // Joins and leaves (`join_leave = true`): no id, not history.
    for (const [name, joined] of [['comet.join', true], ['comet.leave', false]] as const) {
      es.addEventListener(name, (e) => {
        const ev = e as MessageEvent;
        ctx.sink.frame('in', `event: ${name}\ndata: ${ev.data}`);
        try {
          const event = JSON.parse(String(ev.data)) as PresenceEvent;
          if (typeof event.channel === 'string') ctx.sink.presence(joined, event);
        } catch {
          // not JSON: not from a Comet server
        }
      });
    }
    // The server API's orders: no id, not history.
    es.addEventListener('comet.disconnect', (e) => {
      const ev = e as MessageEvent;
      ctx.sink.frame('in', `event: comet.disconnect\ndata: ${ev.data}`);
      let reconnect = true;
      try {
        reconnect = (JSON.parse(String(ev.data)) as { reconnect?: boolean }).reconnect !== false;
      } catch {
        // not JSON: reconnect as usual
      }
      ctx.sink.disconnected(reconnect);
    });
    es.addEventListener('comet.unsubscribed', (e) => {
      const ev = e as MessageEvent;
      ctx.sink.frame('in', `event: comet.unsubscribed\ndata: ${ev.data}`);
      try {
        const { channel } = JSON.parse(String(ev.data)) as { channel?: string };
        if (typeof channel === 'string') ctx.sink.unsubscribed(channel);
      } catch {
        // not JSON: not from a Comet server
      }
    });
    es.addEventListener('comet.gap', (e) => {
      const ev = e as MessageEvent;
      ctx.sink.frame('in', `event: comet.gap\nid: ${ev.lastEventId}\ndata: ${ev.data}`);
      ctx.sink.gap(String(ev.data));
    });
    es.onerror = () => {
      if (this.es !== es) return;
      this.stop();
      // CONNECTING: the stream ended or broke and the browser would retry; CLOSED: it gave up
      // (an HTTP error status or a wrong Content-Type, e.g. a proxy's error page).
      const why = es.readyState === EventSource.CLOSED ? 'refused (HTTP error or not an event stream)' : 'ended';
      ctx.sink.ended(this.opened ? 'event stream ' + why : 'EventSource ' + why + ' before opening');
    };
  }

  stop(): void {
    const es = this.es;
    this.es = null;
    es?.close();
  }
}

export const sse: TransportFactory = {
  unavailable: () => (typeof EventSource === 'function' ? null : 'EventSource is not available'),
  create: (ctx) => new Sse(ctx),
};
