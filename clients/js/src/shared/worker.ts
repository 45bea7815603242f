// The bundle as its own SharedWorker script: loaded in a SharedWorkerGlobalScope, comet.js serves
// the tabs that connect to it (README "Sharing one connection between tabs"). One worker per
// sharing key (the worker's `name`), so the first tab's options are every tab's.

import type { Client } from '../client.js';
import { Hub, type Peer } from './hub.js';
import type { SharedOptions, ToWorker } from './wire.js';

interface WorkerScope {
  addEventListener(type: 'connect', fn: (e: MessageEvent) => void): void;
}

/** Whether this code runs in a SharedWorker. */
export function inSharedWorker(): boolean {
  const g = globalThis as { SharedWorkerGlobalScope?: abstract new () => unknown };
  return typeof g.SharedWorkerGlobalScope === 'function' && globalThis instanceof g.SharedWorkerGlobalScope;
}

/** In a SharedWorker, answers the tabs' ports; elsewhere does nothing. Returns whether it serves. */
export function serveSharedWorker(make: (o: SharedOptions) => Client): boolean {
  if (!inSharedWorker()) return false;
  let hub: Hub | null = null;
  (globalThis as unknown as WorkerScope).addEventListener('connect', (e) => {
    const port = e.ports[0];
    if (!port) return;
    const peer: Peer = { post: (m) => port.postMessage(m) };
    let tab: string | undefined;
    const gone = () => {
      if (tab !== undefined) hub?.receive({ t: 'bye', tab }, peer);
    };
    port.onmessage = (ev: MessageEvent) => {
      const m = ev.data as ToWorker;
      if (m.t === 'open') {
        const options = m.options;
        hub ??= new Hub(() => make(options));
        port.postMessage({ t: 'ready' });
        return;
      }
      if (!hub) return;
      tab = m.tab;
      hub.receive(m, peer);
    };
    // Chromium 122+: a port whose document went away says so (the tab's life lock covers the rest).
    port.addEventListener('close', gone);
  });
  return true;
}
