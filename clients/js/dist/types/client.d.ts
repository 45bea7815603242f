import { Emitter } from './emitter.js';
import { type ShareMode } from './shared/tab.js';
import { type ClientEvents, type ClientOptions, type ConnectionState, type PresenceEntry, type PublishResult, type SubscribeOptions, type TransportFactory, type TransportName } from './types.js';
/** The transport implementations, by name (replaceable in tests). */
export declare const FACTORIES: Record<TransportName, TransportFactory>;
/** The version of this client; tabs share a connection only with the same version. */
export declare const VERSION = "0.1.0";
/** One application subscription to one channel. Several may share a channel and a connection. */
export declare class Subscription {
    private readonly options;
    private readonly remove;
    private readonly lastId;
    /** The channel. */
    readonly channel: string;
    private active;
    /** The cursor of the last message delivered on this channel, to resume from later. */
    get cursor(): string | undefined;
    /** Stops this subscription; the channel is left when its last subscription goes. */
    unsubscribe(): void;
}
/**
 * A Comet client: `new Client("https://host", options)`. It connects when the first subscription
 * is made and stays connected (reconnecting as needed) until [`close`](Client.close).
 */
export declare class Client extends Emitter<ClientEvents> {
    /** The server's base URL. */
    readonly url: string;
    private readonly opts;
    private readonly order;
    private readonly channels;
    private readonly book;
    private readonly fetch;
    private transport;
    private transportOpen;
    /** The channels of the current connection (or attempt). */
    private connected;
    /** Incremented per connection attempt: callbacks of older ones are ignored. */
    private gen;
    /** Index in `order` of the transport in use or being tried. */
    private idx;
    /** Failed attempts in a row (the backoff exponent). */
    private attempt;
    private openedAt;
    private everOpened;
    private timer;
    /** The current attempt's "did not open in time" timer. */
    private openTimer;
    private syncQueued;
    private closed;
    private current;
    private readonly unlisten;
    /** Channels being repaired (see [`repair`]), with the messages that arrived meanwhile. */
    private readonly repairing;
    /** Channels whose repair found nothing: their offsets are not contiguous; do not retry. */
    private readonly noRepair;
    /** With `shared: true`: this tab's membership in the group sharing one connection. The hub
     *  then stands in for the transport, and its states are this client's. */
    private readonly link;
    /** The hub's last state (shared clients). */
    private hubState;
    /** Whether the shared connection was ever open (its `connecting` is then a `reconnecting`). */
    private hubOpened;
    constructor(url?: string, options?: ClientOptions);
    private joinShared;
    /** How this client shares its connection: `"worker"` (a SharedWorker), `"locks"` (the tab
     *  holding a Web Lock), `"alone"` (the SharedWorker failed and there are no Web Locks: its own
     *  connection), or `null` (unshared, or not decided yet: sharing starts with the first
     *  subscription). */
    get sharing(): ShareMode | null;
    on<K extends keyof ClientEvents>(type: K, fn: (value: ClientEvents[K]) => void): () => void;
    /** The current state. */
    get state(): ConnectionState;
    /** The transport in use (or being tried). */
    get transportName(): TransportName | null;
    /** Subscribes to `channel`. Throws `TypeError` on a bad channel name or `since`. */
    subscribe(channel: string, options?: SubscribeOptions): Subscription;
    /**
     * Who is subscribed to `channel` (a namespace with `presence = true`): `GET
     * /channels/{channel}/presence`. Rejects with a [`CometError`] (`presence_off`,
     * `unauthorized`, …).
     */
    presence(channel: string): Promise<PresenceEntry[]>;
    /**
     * Publishes `data` to `channel`: over the WebSocket when one is open, else `POST /pub/{channel}`.
     * Resolves to the message's cursor; rejects with a [`CometError`] (`code`: the server's code).
     */
    publish(channel: string, data: string, options?: {
        event?: string;
    }): Promise<PublishResult>;
    /** Ends every subscription and the connection, for good. */
    close(): void;
    private shut;
    /** The server ended `channel`'s subscriptions: they are over, and the channel is left. */
    private serverUnsubscribed;
    private remove;
    private queueSync;
    /** Brings the connection to the current channel set. */
    private sync;
    private connect;
    private open;
    /** A transport that never opened: try the next one; after the last, wait and start over. */
    private failedToOpen;
    /** An open connection was lost: reconnect on the same transport after a backoff. */
    private lost;
    private retry;
    private stopTransport;
    /**
     * Gives every channel of `channels` without a watermark one, with a short poll (one per kind of
     * start: live edge or `earliest`), delivering what `earliest` replays. From then on every
     * connection sends a full position, so a channel that had no message yet is resumed exactly too
     * (the streaming transports do not tell the client where a channel stood when it subscribed).
     * Returns false when the server could not be reached (a retry is then scheduled).
     */
    private anchor;
    private deliver;
    /**
     * A message skipped offsets with no gap notice: something was lost in transit (e.g. a named
     * event that an `EventSource` had no listener for). Hold the channel's messages, fetch what
     * follows the watermark with one short poll, deliver it, then what arrived meanwhile.
     */
    private repair;
    private gapNotice;
    /** The server rejected our position: start every channel over at the live edge. */
    private resetCursors;
    private eventNames;
    private setState;
    private frame;
    private offline;
    private waitOnline;
    private listenToPage;
}
