export { Client, Subscription, VERSION } from './client.js';
export { CometError } from './http.js';
export { backoffDelay } from './backoff.js';
export { ALL_TRANSPORTS } from './types.js';
export type { ClientEvents, ClientOptions, ConnectionState, Frame, GapInfo, Message, PresenceEntry, PresenceEvent, PublishResult, StateChange, SubscribeOptions, TransportName, } from './types.js';
export type { BackoffOptions } from './backoff.js';
