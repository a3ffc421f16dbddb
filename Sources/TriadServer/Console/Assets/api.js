// The API as the console uses it: the token lives in this tab's sessionStorage only (never a
// URL, never a cookie), every call sends it as a bearer, and every refusal becomes a
// ProblemError carrying the server's problem+json `title` and `detail`.

const KEY = 'triad.token';

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ProblemError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
    this.detail = problem.detail || '';
    this.problem = problem;
  }
}

/** Thrown when the server cannot be reached at all. */
export class OfflineError extends Error {}

const listeners = { unauthorized: [], offline: [], online: [] };
/** 'unauthorized' (token refused), 'offline' / 'online' (server gone / back). */
export function on(event, fn) {
  listeners[event].push(fn);
}
function emit(event, arg) {
  for (const fn of listeners[event]) fn(arg);
}

async function problemOf(response) {
  const text = await response.text();
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed === 'object') return parsed;
  } catch (_) { /* not JSON */ }
  return { title: `${response.status} ${response.statusText}`, detail: text.slice(0, 300) };
}

/** call('GET', '/api/v1/resources') → parsed JSON; throws ProblemError / OfflineError. */
export async function call(method, path, body, extraHeaders = {}) {
  const headers = { Authorization: `Bearer ${token.get() || ''}`, ...extraHeaders };
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = headers['Content-Type'] || 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    emit('offline', e);
    throw new OfflineError('the server does not answer');
  }
  emit('online');
  if (!response.ok) {
    const problem = await problemOf(response);
    const error = new ProblemError(response.status, problem);
    if (response.status === 401) emit('unauthorized', error);
    throw error;
  }
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/**
 * The registry's events as Server-Sent Events, read with fetch (EventSource cannot send a
 * bearer token). Reconnects with back-off and resumes after the last event it saw
 * (Last-Event-ID); a refused token ends it. `onEvent(cloudEvent)` for each event,
 * `onState('open'|'lost'|'closed')` as the connection changes.
 */
export class EventStream {
  constructor(onEvent, onState) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.loop();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    let delay = 500;
    while (!this.stopped) {
      try {
        await this.once();
        delay = 500; // the server ended a stream that had opened: reconnect soon
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof ProblemError) {
          if (e.status === 401) {
            this.onState('closed');
            emit('unauthorized', e);
            return;
          }
          if (e.status === 410) this.lastId = null; // resume point compacted: start from now
        }
      }
      if (this.stopped) return;
      this.onState('lost');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }

  async once() {
    this.controller = new AbortController();
    const headers = { Authorization: `Bearer ${token.get() || ''}`, Accept: 'text/event-stream' };
    if (this.lastId !== null) headers['Last-Event-ID'] = this.lastId;
    let response;
    try {
      response = await fetch('/api/v1/events', { headers, signal: this.controller.signal });
    } catch (e) {
      emit('offline', e);
      throw e;
    }
    if (!response.ok) throw new ProblemError(response.status, await problemOf(response));
    emit('online');
    this.onState('open');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        this.dispatch(frame);
      }
    }
  }

  dispatch(frame) {
    let id = null;
    const data = [];
    for (const line of frame.split('\n')) {
      if (line.startsWith(':')) continue; // comment: stream open, keep-alive
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'id') id = value;
      else if (field === 'data') data.push(value);
    }
    if (id !== null && /^[0-9]+$/.test(id)) this.lastId = id;
    if (data.length === 0) return;
    try {
      this.onEvent(JSON.parse(data.join('\n')));
    } catch (_) { /* a frame that is not JSON is skipped */ }
  }
}
