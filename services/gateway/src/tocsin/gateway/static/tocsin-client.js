// tocsin-client.js: the browser counterpart of tocsin.client.EventStream.
// Dependency-free ES module, served by every gateway at /sdk/tocsin-client.js.
// Protocol: docs/protocol.md. It authenticates with the token as a second
// subprotocol ("bearer.<jwt>" next to "tocsin.v1"), subscribes, resumes every
// channel from its last (epoch, offset) after a reconnect, renews its token in
// band, and backs off with full jitter (0.5 s x2, capped at 20 s by default).
//
//   import { TocsinClient } from "/sdk/tocsin-client.js";
//   const client = new TocsinClient({ url: "wss://tocsin.example/ws",
//     token: async () => (await fetch("/token")).text(), channels: ["alerts"],
//     onEvent: (event) => render(event), onReset: (channel) => reload(channel),
//     onSubscribed: (channel, position, recovered) => firstLoad(channel),
//     onFatal: (error) => showLogin(error) });
//   client.start();

export const SUBPROTOCOL = "tocsin.v1";

// Close codes 4400-4499 mean "do not reconnect"; every other close reconnects.
export function isReconnectClass(code) {
  return !(code >= 4400 && code <= 4499);
}

export function backoffDelay(attempt, { base = 0.5, factor = 2, cap = 20 } = {}) {
  const ceiling = Math.min(cap, base * Math.pow(factor, attempt));
  return Math.random() * ceiling; // full jitter, in seconds
}

export class TocsinClient {
  constructor({
    url,
    token,
    channels = ["alerts"],
    onEvent = () => {},
    onReset = () => {},
    onSubscribed = () => {},
    onFatal = () => {},
    onStatus = () => {},
    onExpiry = () => {},
    backoff = {},
    heartbeatTimeout = 45,
  }) {
    this.urls = Array.isArray(url) ? url : [url];
    this.token = token;
    this.channels = channels;
    this.onEvent = onEvent;
    this.onReset = onReset;
    this.onSubscribed = onSubscribed;
    this.onFatal = onFatal;
    this.onStatus = onStatus;
    this.onExpiry = onExpiry; // (expiresAt, graceSeconds?) on welcome, refreshed, token_expiring
    this.backoff = backoff;
    this.heartbeatTimeout = heartbeatTimeout;
    this.positions = new Map(); // channel -> { epoch, offset }
    this.attempt = 0;
    this.connects = 0;
    this.socket = null;
    this.stopped = true;
    this.silenceTimer = null;
  }

  async currentToken() {
    return typeof this.token === "function" ? await this.token() : this.token;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.silenceTimer);
    if (this.socket) this.socket.close(1000, "client stopped");
  }

  async connect() {
    if (this.stopped) return;
    const url = this.urls[this.connects++ % this.urls.length];
    let token;
    try {
      token = await this.currentToken();
    } catch (error) {
      this.retry();
      return;
    }
    const socket = new WebSocket(url, [SUBPROTOCOL, `bearer.${token}`]);
    this.socket = socket;
    this.onStatus("connecting");
    socket.onmessage = (message) => this.handle(socket, JSON.parse(message.data));
    socket.onclose = (close) => {
      clearTimeout(this.silenceTimer);
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      if (!isReconnectClass(close.code)) {
        this.stopped = true;
        this.onStatus("stopped");
        this.onFatal({ code: close.code, reason: close.reason });
        return;
      }
      this.retry();
    };
  }

  // Renew the open socket's token in band (same subject); later connects use it too.
  async refresh(token) {
    if (token !== undefined) this.token = token;
    const socket = this.socket;
    if (!socket || socket.readyState !== 1) return false;
    socket.send(JSON.stringify({ type: "refresh", token: await this.currentToken() }));
    return true;
  }

  retry() {
    this.onStatus("reconnecting");
    const delay = backoffDelay(this.attempt++, this.backoff);
    setTimeout(() => this.connect(), delay * 1000);
  }

  // Browsers answer WebSocket pings themselves but expose none of it, so a
  // silent server is detected by the absence of any frame, our `ping` included.
  armSilenceTimer(socket) {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => {
      socket.send(JSON.stringify({ type: "ping" }));
      this.silenceTimer = setTimeout(() => socket.close(4002, "heartbeat_timeout"), 10000);
    }, this.heartbeatTimeout * 1000);
  }

  async handle(socket, frame) {
    this.armSilenceTimer(socket);
    switch (frame.type) {
      case "welcome":
        this.attempt = 0;
        this.onStatus("open");
        this.onExpiry(frame.expires_at);
        for (const channel of this.channels) {
          const request = { type: "subscribe", channel };
          const position = this.positions.get(channel);
          if (position) {
            request.since = position.offset;
            request.epoch = position.epoch;
          }
          socket.send(JSON.stringify(request));
        }
        break;
      case "subscribed": {
        const position = { epoch: frame.epoch, offset: frame.offset };
        if (!frame.recovered) {
          this.positions.set(frame.channel, position);
          this.onReset(frame.channel, position);
        } else if (!this.positions.has(frame.channel)) {
          this.positions.set(frame.channel, position);
        }
        // Every answer, recovered or not: an application that loads its state over
        // REST does so after its first one, so no event falls between load and live.
        this.onSubscribed(frame.channel, position, Boolean(frame.recovered));
        break;
      }
      case "event": {
        const last = this.positions.get(frame.channel);
        if (last && last.epoch === frame.epoch && frame.offset <= last.offset) break;
        this.positions.set(frame.channel, { epoch: frame.epoch, offset: frame.offset });
        this.onEvent(frame);
        break;
      }
      case "token_expiring":
        this.onExpiry(frame.expires_at, frame.grace);
        if (typeof this.token === "function") {
          socket.send(JSON.stringify({ type: "refresh", token: await this.token() }));
        }
        break;
      case "refreshed":
        this.onExpiry(frame.expires_at);
        break;
      case "error":
        if (["forbidden", "bad_channel", "too_many_subscriptions"].includes(frame.code)) {
          this.onFatal({ code: frame.code, reason: frame.message, channel: frame.channel });
        }
        break;
      default:
        break;
    }
  }
}
