type Listener<T> = (value: T) => void;
export declare class Emitter<Events> {
    private readonly listeners;
    /** Calls `fn` on every `type` event; returns a function that removes it. */
    on<K extends keyof Events>(type: K, fn: Listener<Events[K]>): () => void;
    /** Removes `fn`. */
    off<K extends keyof Events>(type: K, fn: Listener<Events[K]>): void;
    /** Whether anyone listens to `type` (frames are only formatted when someone does). */
    has(type: keyof Events): boolean;
    protected emit<K extends keyof Events>(type: K, value: Events[K]): void;
}
/** Calls an application callback; its exception is reported, never thrown into the client. */
export declare function safeCall<T>(fn: (v: T) => void, value: T): void;
export {};
