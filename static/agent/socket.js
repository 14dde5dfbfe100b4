/*
 * The console's websocket, /ws/agent/ (the session cookie signs it in): reconnecting with
 * exponential backoff and, once back, asking for the queue again and re-opening the open
 * conversations, since whatever was sent while it was away is lost.
 */

import { frameListener } from "../widget/chat/dom.js";
import { state } from "./state.js";

const connection = {
  socket: null,
  ready: false,
  everReady: false,
  attempt: 0,
  reconnectTimer: null,
  handshakeTimer: null,
  onFrame: () => {},
  onStatus: () => {},
};

export function isConnected() {
  return connection.ready;
}

// A snapshot for the browser tests.
export function connectionState() {
  return { ready: connection.ready, everReady: connection.everReady, attempt: connection.attempt };
}

function socketUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${path}`;
}

export function startSocket({ onFrame, onStatus }) {
  connection.onFrame = onFrame;
  connection.onStatus = onStatus;
  window.addEventListener("online", () => {
    if (connection.ready) return;
    // A socket still connecting is left to finish: closing it would only start the wait again.
    if (connection.socket && connection.socket.readyState === WebSocket.CONNECTING) return;
    connection.attempt = 0;
    connect();
  });
  connect();
}

function connect() {
  window.clearTimeout(connection.reconnectTimer);
  window.clearTimeout(connection.handshakeTimer);
  if (connection.socket) {
    const previous = connection.socket;
    connection.socket = null;
    try {
      previous.close(1000);
    } catch (error) {
      /* already closed */
    }
  }
  connection.onStatus(connection.everReady ? "reconnecting" : "connecting");
  let socket;
  try {
    socket = new WebSocket(socketUrl(state.config.wsPath));
  } catch (error) {
    scheduleReconnect();
    return;
  }
  connection.socket = socket;
  // A socket that does not open within 15 s is given up and retried (as the widget's is).
  connection.handshakeTimer = window.setTimeout(() => {
    if (connection.socket === socket && !connection.ready) socket.close(4000);
  }, 15000);
  socket.addEventListener("open", () => {
    if (connection.socket !== socket) return;
    window.clearTimeout(connection.handshakeTimer);
    const reconnected = connection.everReady;
    connection.ready = true;
    connection.everReady = true;
    connection.attempt = 0;
    connection.onStatus("online");
    // The server sends the queue on connecting; asking again after a reconnect costs one read and
    // makes sure the counts are the ones after whatever happened meanwhile.
    if (reconnected) send({ type: "queue" });
    for (const conversation of state.opened) send({ type: "open", conversation });
  });
  // One bad frame must not take the console down.
  socket.addEventListener(
    "message",
    frameListener(() => connection.socket === socket, (frame) => connection.onFrame(frame), "agent console"),
  );
  socket.addEventListener("close", (event) => {
    if (connection.socket !== socket) return;
    connection.socket = null;
    connection.ready = false;
    window.clearTimeout(connection.handshakeTimer);
    if (event.code === 4401 || event.code === 4403) {
      // Signed out, or no longer an agent: the page says which.
      window.location.reload();
      return;
    }
    connection.onStatus("reconnecting");
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  window.clearTimeout(connection.reconnectTimer);
  const base = Math.min(15000, 500 * 2 ** Math.min(connection.attempt, 10));
  const delay = base * (0.75 + Math.random() * 0.5);
  connection.attempt += 1;
  connection.reconnectTimer = window.setTimeout(connect, delay);
}

// Sends a frame now; false when the socket is not connected (nothing is queued: the caller says so).
export function send(frame) {
  if (!connection.ready || !connection.socket) return false;
  try {
    connection.socket.send(JSON.stringify(frame));
    return true;
  } catch (error) {
    return false;
  }
}

// For the browser tests: drop the connection as a network failure would.
export function dropConnection() {
  if (connection.socket) connection.socket.close(4000);
}
