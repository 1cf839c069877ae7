// The gateway's REST API as the console uses it. The token (a JWT or an
// API key: opaque here) lives in sessionStorage, so it is gone when the
// tab closes, and goes out as `Authorization: Bearer` on every call.

const TOKEN_KEY = 'agentmesh.console.token';

export const session = {
  token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
  /** What the token says about its holder, when it is a readable JWT. */
  claims() {
    const parts = (this.token() ?? '').split('.');
    if (parts.length !== 3) return null;
    try {
      const json = atob(parts[1].replace(/-/g, '+').replace(/_/g, '/'));
      const claims = JSON.parse(json);
      return claims && typeof claims === 'object' ? claims : null;
    } catch {
      return null;
    }
  },
};

/** Per-tab memory of small things (names seen, trace ids of tasks). */
export const memory = {
  get(key, fallback) {
    try {
      return JSON.parse(sessionStorage.getItem(`agentmesh.console.${key}`)) ?? fallback;
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    sessionStorage.setItem(`agentmesh.console.${key}`, JSON.stringify(value));
  },
  /** Adds `name` to the set stored under `key` (most recent first, bounded). */
  remember(key, name, max = 50) {
    const names = this.get(key, []).filter((n) => n !== name);
    names.unshift(name);
    this.set(key, names.slice(0, max));
  },
};

/** An error answer of the API: `{"error": {code, message, field}}`. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field ?? null;
  }
}

function headers(extra) {
  const h = { Accept: 'application/json', ...extra };
  const token = session.token();
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

function url(path, query) {
  const u = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, String(v));
  }
  return u;
}

async function failure(response) {
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  const e = body?.error ?? {};
  const error = new ApiError(
    response.status,
    e.code ?? String(response.status),
    e.message ?? (text || response.statusText),
    e.field,
  );
  if (response.status === 401) window.dispatchEvent(new CustomEvent('console:unauthenticated', { detail: error }));
  return error;
}

/** One JSON call; resolves to the parsed body, rejects with an ApiError. */
export async function call(method, path, { query, body, headers: extra, signal } = {}) {
  const init = { method, headers: headers(extra), signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url(path, query), init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'UNAVAILABLE', `the gateway did not answer: ${error.message}`);
  }
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, query, signal) => call('GET', path, { query, signal });

/** A random W3C `traceparent`, so the console knows a task's trace id. */
export function newTraceparent() {
  const hex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, '0')).join('');
  const traceId = hex(16);
  return { traceId, header: `00-${traceId}-${hex(8)}-01` };
}

/**
 * A Server-Sent Events stream read with fetch (EventSource cannot send an
 * Authorization header). Yields `{id, event, data}`; ends when the server
 * closes the stream.
 */
export async function* events(path, { lastEventId, signal } = {}) {
  const extra = { Accept: 'text/event-stream' };
  if (lastEventId) extra['Last-Event-ID'] = lastEventId;
  const response = await fetch(url(path), { headers: headers(extra), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = { id: lastEventId ?? '', event: 'message', data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (;;) {
      const end = buffer.search(/\r\n|\r|\n/);
      if (end < 0) break;
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
      if (line === '') {
        if (event.data.length) yield { id: event.id, event: event.event, data: event.data.join('\n') };
        event = { id: event.id, event: 'message', data: [] };
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? '' : line.slice(colon + 1);
      if (text.startsWith(' ')) text = text.slice(1);
      if (name === 'data') event.data.push(text);
      else if (name === 'event') event.event = text;
      else if (name === 'id') event.id = text;
    }
  }
}
