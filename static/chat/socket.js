// A WebSocket that reconnects by itself.
//
// Backoff: 0.5 s doubling up to 10 s, each wait jittered by ±25 %. The
// attempt counter resets once a connection opens. Going offline drops the
// socket at once; coming back online retries at once. Heartbeat: after
// `heartbeatMs` without a frame the socket sends a `ping`; if nothing at all
// arrives within `heartbeatMs` more, the connection is taken for dead (a
// half-open TCP connection never closes by itself) and replaced, and the page
// resumes from where it was. Callers get:
//   onOpen({reconnect})  – every time a connection opens
//   onFrame(obj)         – every JSON frame received that matches its declaration
//   onState(state)       – "connecting" | "open" | "closed"

import { validServerFrame } from './frames.js';

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

export function backoffDelay(attempt) {
  const raw = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  const jittered = raw * (0.75 + Math.random() * 0.5);
  return Math.round(Math.min(MAX_DELAY_MS, jittered));
}

export class ReconnectingSocket {
  constructor(url, { onOpen = () => {}, onFrame = () => {}, onState = () => {}, heartbeatMs = 25_000 } = {}) {
    this.url = url;
    this.heartbeatMs = heartbeatMs;
    this.lastFrameAt = 0;
    this.pingSentAt = 0;
    this.heartbeat = null;
    this.onOpen = onOpen;
    this.onFrame = onFrame;
    this.onState = onState;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.everOpened = false;
    this.stopped = false;
    this.state = 'closed';
    window.addEventListener('online', () => this.reconnectNow());
    // Offline, an open socket neither delivers nor closes (the connection is
    // half-dead until TCP gives up, minutes later): drop it, show that we are
    // reconnecting, and resume from where we were once a new one opens.
    window.addEventListener('offline', () => this.drop());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.reconnectNow();
    });
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state);
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = null;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.setState('connecting');
    ws.addEventListener('open', () => {
      if (this.ws !== ws) return;
      const reconnect = this.everOpened;
      this.everOpened = true;
      this.attempt = 0;
      this.lastFrameAt = Date.now();
      this.pingSentAt = 0;
      this.startHeartbeat();
      this.setState('open');
      this.onOpen({ reconnect });
    });
    ws.addEventListener('message', (event) => {
      if (this.ws !== ws) return;
      this.lastFrameAt = Date.now();
      this.pingSentAt = 0;
      if (typeof event.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      // A frame that does not match its declaration is dropped (and logged once per type).
      if (validServerFrame(frame) && frame.type !== 'pong') this.onFrame(frame);
    });
    ws.addEventListener('close', () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.scheduleReconnect();
    });
    // 'error' is always followed by 'close'; nothing to do here.
  }

  startHeartbeat() {
    clearInterval(this.heartbeat);
    if (!(this.heartbeatMs > 0)) return;
    const every = Math.max(250, Math.min(5_000, this.heartbeatMs / 4));
    this.heartbeat = setInterval(() => this.checkAlive(), every);
  }

  checkAlive() {
    if (!this.isOpen) return;
    const now = Date.now();
    if (this.pingSentAt && now - this.pingSentAt > this.heartbeatMs) {
      this.drop(); // nothing came back: the connection is dead even if it looks open
    } else if (!this.pingSentAt && now - this.lastFrameAt > this.heartbeatMs) {
      this.pingSentAt = now;
      this.send({ type: 'ping' });
    }
  }

  scheduleReconnect() {
    if (this.stopped) return;
    clearInterval(this.heartbeat);
    this.heartbeat = null;
    this.setState('closed');
    clearTimeout(this.timer);
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Give up on the current connection without waiting for it to close; reconnect with backoff. */
  drop() {
    if (this.stopped || this.ws === null) return;
    const ws = this.ws;
    this.ws = null; // its late events are ignored from here on
    try {
      ws.close();
    } catch {
      /* already closing */
    }
    this.scheduleReconnect();
  }

  /** Skip the remaining backoff wait (e.g. the network came back). */
  reconnectNow() {
    if (this.stopped || this.ws !== null || this.timer === null) return;
    this.connect();
  }

  /** Send a JSON frame; returns false if the socket is not open. */
  send(frame) {
    if (!this.isOpen) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.heartbeat);
    if (this.ws) this.ws.close();
    this.ws = null;
    this.setState('closed');
  }
}

// --- the page's one socket -------------------------------------------------------
// main.js opens it once every handler is wired; the other modules send through
// `send`, which queues nothing: a frame sent while the socket is down returns
// false, and the page sends what it still needs when the socket opens again
// (receive.js, socketOpened).

export let socket = null;

export function socketOpen(url, handlers) {
  socket = new ReconnectingSocket(url, handlers);
  socket.connect();
  return socket;
}

export const send = (frame) => socket !== null && socket.send(frame);
