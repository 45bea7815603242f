import type { TransportFactory } from '../types.js';
export declare const iframe: TransportFactory;
