import type { TransportFactory } from '../types.js';
export declare const poll: TransportFactory;
export declare const longpoll: TransportFactory;
