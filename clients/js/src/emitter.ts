// A tiny typed event emitter (no dependency, no DOM EventTarget so it runs anywhere).

type Listener<T> = (value: T) => void;

export class Emitter<Events> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Calls `fn` on every `type` event; returns a function that removes it. */
  on<K extends keyof Events>(type: K, fn: Listener<Events[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn as Listener<never>);
    return () => this.off(type, fn);
  }

  /** Removes `fn`. */
  off<K extends keyof Events>(type: K, fn: Listener<Events[K]>): void {
    this.listeners.get(type)?.delete(fn as Listener<never>);
  }

  /** Whether anyone listens to `type` (frames are only formatted when someone does). */
  has(type: keyof Events): boolean {
    return (this.listeners.get(type)?.size ?? 0) > 0;
  }

  protected emit<K extends keyof Events>(type: K, value: Events[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) safeCall(fn as Listener<Events[K]>, value);
  }
}

/** Calls an application callback; its exception is reported, never thrown into the client. */
export function safeCall<T>(fn: (v: T) => void, value: T): void {
  try {
    fn(value);
  } catch (e) {
    const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
    if (report) report(e);
    else setTimeout(() => { throw e; }, 0);
  }
}
