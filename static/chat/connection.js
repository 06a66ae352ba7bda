// The page's one socket. main.js opens it once every handler is wired; the
// other modules send through `send`, which queues nothing: a frame sent while
// the socket is down returns false, and the page sends what it still needs
// again when the socket opens (receive.js, socketOpened).

import { ReconnectingSocket } from './socket.js';

export let socket = null;

export function socketOpen(url, handlers) {
  socket = new ReconnectingSocket(url, handlers);
  socket.connect();
  return socket;
}

export const send = (frame) => socket !== null && socket.send(frame);
