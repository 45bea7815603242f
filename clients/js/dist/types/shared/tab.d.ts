import type { Frame, PublishResult, StateChange, Transport, TransportContext, TransportFactory, TransportName } from '../types.js';
import { type SharedOptions } from './wire.js';
import type { Client } from '../client.js';
/** Where this bundle was loaded from: the default SharedWorker script (the bundle serves as its
 *  own worker). Read once at load: `document.currentScript` is only set while a classic script
 *  runs; in the ES module build `import.meta.url` says it (esbuild leaves it empty in the IIFE). */
export declare const BUNDLE: {
    url: string;
    type: WorkerType;
} | null;
/** The browser features sharing uses; replaceable in tests (Node has none of the first two). */
export declare const SHARING: {
    SharedWorker: typeof SharedWorker | undefined;
    BroadcastChannel: typeof BroadcastChannel | undefined;
    locks: () => LockManager | undefined;
};
/** What the tab's client hears from the hub beside the link's sink. */
export interface LinkHooks {
    state(s: StateChange): void;
    frame(f: Frame): void;
}
/** `worker`: a SharedWorker holds the connection. `locks`: the tab holding a Web Lock does.
 *  `alone`: the SharedWorker failed and there are no Web Locks: this tab holds its own. */
export type ShareMode = 'worker' | 'locks' | 'alone';
/** One tab's membership in a sharing group. Created per client; lives until `close`. */
export declare class TabLink {
    private readonly options;
    private readonly workerUrl;
    private readonly make;
    private readonly hooks;
    readonly id: string;
    readonly key: string;
    /** `worker` or `locks` once decided; `null` before. */
    mode: ShareMode | null;
    private started;
    private closed;
    /** A hub is known and receives what is sent. */
    private ready;
    private port;
    private bc;
    /** The current leader's tab id (Web Locks mode). */
    private leader;
    /** This tab's hub, while it leads. */
    private hub;
    private current;
    private readonly pending;
    private ref;
    private frames;
    /** Cancels the lock requests still waiting (the leader lock of a tab that is not leading). */
    private readonly quit;
    /** Releases the locks held (the tab's life lock, the leader lock). */
    private readonly releases;
    private readonly self;
    private readonly unlisten;
    /** A link, or `null` where this browser can share nothing (no SharedWorker, no Web Locks). */
    static create(options: SharedOptions, version: string, workerUrl: string | undefined, make: (o: SharedOptions) => Client, hooks: LinkHooks): TabLink | null;
    private constructor();
    /** The transport factory the tab's client uses in place of the real ones. */
    factory(name: TransportName, cursor: (channel: string) => string | undefined): TransportFactory;
    /** The tab's client listens to frames: have the hub forward the connection's. */
    wantFrames(): void;
    attach(t: LinkTransport): void;
    detach(t: LinkTransport): void;
    /** The tab's client has no channel left: the hub releases this tab's. */
    idle(): void;
    /** Sends the whole of what this tab wants (idempotent). */
    resync(): void;
    publish(channel: string, data: string, event?: string): Promise<PublishResult>;
    private send;
    /** A hub is (newly) there: tell it everything, and send the calls that waited. */
    private hubUp;
    /** The hub changed before answering: whether those publishes happened is unknown. */
    private failSent;
    private fromHub;
    private start;
    private findHub;
    private tryWorker;
    /** Web Locks mode: whoever holds the leader lock runs the hub; the others queue for it, so when
     *  the leader goes the next in line takes over at once. */
    private elect;
    private lead;
    private onBroadcast;
    private peerOf;
    /** Leaves for good: the hub releases this tab's channels; a leader hands over. */
    close(): void;
}
/** The transport of a shared tab: the hub stands in for the connection. */
export declare class LinkTransport implements Transport {
    readonly name: TransportName;
    readonly ctx: TransportContext;
    private readonly link;
    private readonly cursor;
    private readonly channels;
    constructor(name: TransportName, ctx: TransportContext, link: TabLink, cursor: (channel: string) => string | undefined);
    start(): void;
    stop(): void;
    update(added: readonly string[], removed: readonly string[]): boolean;
    publish(channel: string, data: string, event?: string): Promise<PublishResult>;
    /** Each channel with this tab's watermark, for the hub to resume from. */
    wanted(): {
        channel: string;
        since?: string;
    }[];
}
