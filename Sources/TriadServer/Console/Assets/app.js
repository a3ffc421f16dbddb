// The console's shell: sign-in, navigation, the one live event stream every page listens to,
// and the banner shown while the server is away.

import { call, token, on, EventStream } from './api.js';
import { h, fill } from './dom.js';
import { resourcesView, resourceView, ledgerView, eventsView, problemBox } from './views.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const whoEl = document.getElementById('who');
const banner = document.getElementById('banner');

const ctx = {
  who: null,
  mayList: new Set(),
  may(action) { return this.mayList.has(action); },
  events: [],
  recentEvents() { return this.events; },
};
let stream = null;
let view = null;

function showBanner(text) {
  banner.textContent = text;
  banner.hidden = !text;
}

function signIn(reason) {
  if (stream) stream.stop();
  stream = null;
  closeView();
  token.clear();
  ctx.who = null;
  ctx.events = [];
  fill(nav);
  fill(whoEl);
  showBanner('');
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', placeholder: 'a Triad token', required: true, size: 50, 'aria-label': 'token' });
  const message = h('div', { id: 'signin-message' }, reason ? h('div', { class: 'problem', role: 'alert' }, reason) : null);
  const form = h('form', { id: 'signin', onsubmit: async (e) => {
    e.preventDefault();
    token.set(input.value.trim());
    try {
      await start();
      if (!location.hash || location.hash === '#/signin') location.hash = '#/resources';
      else route();
    } catch (err) {
      token.clear();
      fill(message, problemBox(err));
    }
  } }, input, h('button', { type: 'submit' }, 'Sign in'));
  fill(main, h('section', { class: 'signin' },
    h('h1', {}, 'Sign in to Triad'),
    h('p', { class: 'muted' }, 'Paste a token of any role (the admin token is in the server\'s data directory, admin.token). It is kept in this tab only.'),
    message, form));
  input.focus();
}

/** Who the token is, what it may do, and the live stream. Throws the server's problem. */
async function start() {
  const who = await call('GET', '/api/v1/whoami');
  ctx.who = who;
  ctx.mayList = new Set(who.may || []);
  fill(whoEl, `${who.name} (${who.role}) `, h('button', { id: 'signout', onclick: () => { location.hash = ''; signIn(''); } }, 'Sign out'));
  const links = [];
  if (ctx.may('readResources')) links.push(['#/resources', 'Resources']);
  if (who.resource) links.push([`#/r/${encodeURIComponent(who.resource)}`, who.resource]);
  if (ctx.may('invokeOperations') || ctx.may('readAllInvocations')) links.push(['#/ledger', 'Ledger']);
  if (ctx.may('readEvents')) links.push(['#/events', 'Events']);
  fill(nav, links.map(([href, text]) => h('a', { href }, text)));
  if (ctx.may('readEvents')) {
    stream = new EventStream((ev) => {
      ctx.events.unshift(ev);
      if (ctx.events.length > 500) ctx.events.length = 500;
      if (view && view.onEvent) view.onEvent(ev);
    }, (state) => {
      if (state === 'open') showBanner('');
      if (state === 'lost') showBanner('The connection to the server was lost; reconnecting…');
    }).start();
  }
}

function closeView() {
  if (view && view.close) view.close();
  view = null;
}

function route() {
  if (!ctx.who) return;
  closeView();
  const hash = location.hash || '#/resources';
  const one = hash.match(/^#\/r\/(.+)$/);
  if (one) view = resourceView(ctx, main, decodeURIComponent(one[1]));
  else if (hash === '#/ledger') view = ledgerView(ctx, main);
  else if (hash === '#/events') view = eventsView(ctx, main);
  else if (!ctx.may('readResources') && ctx.who.resource) location.hash = `#/r/${encodeURIComponent(ctx.who.resource)}`;
  else view = resourcesView(ctx, main);
}

let signingOut = false;
on('unauthorized', (error) => {
  if (signingOut || !ctx.who) return;
  signingOut = true;
  signIn(`Signed out: ${error.title}${error.detail ? ` — ${error.detail}` : ''}`);
  signingOut = false;
});
on('offline', () => { if (ctx.who) showBanner('The server does not answer; reconnecting…'); });
on('online', () => { if (banner.textContent.startsWith('The server does not answer')) showBanner(''); });
window.addEventListener('hashchange', route);

(async () => {
  if (!token.get()) return signIn('');
  try {
    await start();
    route();
  } catch (e) {
    signIn(e.title ? `${e.title}${e.detail ? ` — ${e.detail}` : ''}` : String(e.message || e));
  }
})();
