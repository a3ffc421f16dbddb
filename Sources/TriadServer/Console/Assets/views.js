// The console's pages. Each view fills `el` and returns {onEvent, close}: onEvent gets every
// CloudEvent of the live stream while the view is shown.

import { call, ProblemError } from './api.js';
import { h, fill, age, price, json } from './dom.js';
import { telemetryChart } from './chart.js';

const SPACE_LABEL = 'triad.io/space';

/** A problem shown as its title and detail, never as a bare code. */
export function problemBox(error) {
  if (error instanceof ProblemError) {
    return h('div', { class: 'problem', role: 'alert' }, h('strong', {}, error.title), error.detail ? ` — ${error.detail}` : '');
  }
  return h('div', { class: 'problem', role: 'alert' }, h('strong', {}, 'Error'), ` — ${error.message || error}`);
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function phaseBadge(phase) {
  return h('span', { class: `badge phase-${phase || 'none'}` }, phase || '—');
}

/** `spec.description` is text by language (`{en: …, zh: …}`). */
function description(d) {
  if (!d || typeof d !== 'object') return null;
  const entries = Object.entries(d);
  if (entries.length === 0) return null;
  return h('div', { class: 'description' }, entries.map(([lang, text]) => h('p', { lang }, text)));
}

function labels(l) {
  const entries = Object.entries(l || {});
  if (entries.length === 0) return null;
  return h('div', { class: 'labels' }, entries.map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`)));
}

function spaceOf(r) {
  return r.metadata?.labels?.[SPACE_LABEL] || r.status?.location?.space || '';
}

// MARK: resources

export function resourcesView(ctx, el) {
  const rows = new Map();
  const kind = h('select', { id: 'kind-filter', 'aria-label': 'kind' },
    ['', 'Device', 'Person', 'Space'].map((k) => h('option', { value: k }, k || 'every kind')));
  const selector = h('input', { id: 'selector-filter', placeholder: 'label selector, e.g. triad.io/space=pantry-3f', size: 40 });
  const status = h('div', { class: 'status-line' });
  const tbody = h('tbody', { id: 'resources-body' });
  const spaces = h('section', { id: 'spaces' });
  const form = h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); load(); } },
    kind, selector, h('button', { type: 'submit' }, 'Filter'));
  kind.addEventListener('change', () => load());
  fill(el,
    h('h1', {}, 'Resources'), form, status,
    h('table', { class: 'grid', id: 'resources' },
      h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Phase', 'Probe', 'Bound', 'Space', 'Operations', 'Age'].map((c) => h('th', {}, c)))),
      tbody),
    spaces);

  function render() {
    const list = [...rows.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    fill(tbody, list.map((r) => h('tr', { 'data-name': r.metadata.name, class: r.status?.phase === 'Failed' ? 'failed' : null },
      h('td', {}, h('a', { href: `#/r/${encodeURIComponent(r.metadata.name)}` }, r.metadata.name),
        r.spec?.aliasName ? h('div', { class: 'alias' }, r.spec.aliasName) : null),
      h('td', {}, r.spec?.kind || ''),
      h('td', { class: 'phase' }, phaseBadge(r.status?.phase)),
      h('td', { class: 'probe' }, r.status?.probePhase || ''),
      h('td', { class: 'bound' }, r.status?.binding ? `by ${r.status.binding.holder}` : (r.spec?.accessMode === 'Exclusive' ? 'free' : '')),
      h('td', {}, spaceOf(r)),
      h('td', { class: 'ops' }, (r.spec?.operations || []).map((o) => o.name).join(', ')),
      h('td', {}, age(r.metadata.creationTimestamp)))));
    if (list.length === 0) tbody.appendChild(h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No resources match.')));
    renderSpaces(list);
  }

  function renderSpaces(list) {
    const places = list.filter((r) => r.spec?.kind === 'Space');
    if (places.length === 0) return fill(spaces);
    fill(spaces, h('h2', {}, 'Spaces'), h('div', { class: 'cards' }, places.map((space) => {
      const name = space.metadata.name;
      const people = list.filter((r) => r.spec?.kind === 'Person' && r.status?.location?.space === name);
      const devices = list.filter((r) => r.spec?.kind === 'Device' && r.metadata?.labels?.[SPACE_LABEL] === name);
      const link = (r) => h('li', {}, h('a', { href: `#/r/${encodeURIComponent(r.metadata.name)}` }, r.metadata.name));
      return h('div', { class: 'card', 'data-space': name },
        h('h3', {}, name),
        h('div', { class: 'muted' }, 'People'), h('ul', {}, people.length ? people.map(link) : h('li', { class: 'muted' }, 'nobody')),
        h('div', { class: 'muted' }, 'Devices'), h('ul', {}, devices.length ? devices.map(link) : h('li', { class: 'muted' }, 'none')));
    })));
  }

  async function load() {
    const params = new URLSearchParams({ limit: '500' });
    if (kind.value) params.set('kind', kind.value);
    if (selector.value.trim()) params.set('labelSelector', selector.value.trim());
    fill(status, 'Loading…');
    try {
      const fresh = new Map();
      let next = null;
      do {
        if (next) params.set('continue', next);
        const page = await call('GET', `/api/v1/resources?${params}`);
        for (const r of page.items || []) fresh.set(r.metadata.name, r);
        next = page.metadata?.continue || null;
      } while (next);
      rows.clear();
      for (const [k, v] of fresh) rows.set(k, v);
      fill(status);
      render();
    } catch (e) {
      fill(status, problemBox(e));
    }
  }
  const reload = debounce(load, 150);

  load();
  const tick = setInterval(render, 10000); // ages advance
  return {
    close() { clearInterval(tick); },
    onEvent(ev) {
      if (!ev.type.startsWith('io.triad.resource.') && !ev.type.startsWith('io.triad.binding.')) return;
      // A selector is the server's to judge: list again. Without one, the event's document is the row.
      if (selector.value.trim()) return reload();
      const r = ev.data;
      if (!r || !r.metadata) return;
      if (ev.type === 'io.triad.resource.deleted') rows.delete(r.metadata.name);
      else if (!kind.value || r.spec?.kind === kind.value) rows.set(r.metadata.name, r);
      render();
    },
  };
}

// MARK: one resource

export function resourceView(ctx, el, name) {
  const header = h('div', { class: 'resource-header' });
  const problems = h('div');
  const ops = h('section', { id: 'operations' });
  const binding = h('section', { id: 'binding' });
  const conditions = h('section', { id: 'conditions' });
  const chart = h('section', { id: 'telemetry' });
  const events = h('ol', { id: 'resource-events', class: 'events' });
  const invocations = h('section', { id: 'invocations' });
  const documents = h('section', { id: 'document' });
  const result = h('div', { id: 'invoke-result' });
  fill(el, header, problems,
    h('div', { class: 'columns' },
      h('div', {}, chart, ops, result, binding, conditions),
      h('div', {}, invocations, h('section', {}, h('h2', {}, 'Recent events'), events), documents)));
  let resource = null;
  const seen = [];

  async function load() {
    try {
      resource = await call('GET', `/api/v1/resources/${encodeURIComponent(name)}`);
      fill(problems);
      render();
    } catch (e) {
      fill(problems, problemBox(e));
    }
  }

  function render() {
    const r = resource;
    fill(header,
      h('h1', {}, r.metadata.name, ' ', phaseBadge(r.status?.phase)),
      r.spec?.aliasName ? h('div', { class: 'alias' }, r.spec.aliasName) : null,
      description(r.spec?.description),
      labels(r.metadata?.labels),
      h('div', { class: 'muted' }, `${r.spec?.kind || ''} · ${r.spec?.accessMode || 'Shared'}`,
        spaceOf(r) ? ` · in ${spaceOf(r)}` : '', ` · resourceVersion ${r.metadata.resourceVersion}`));
    renderOperations(r);
    renderBinding(r);
    renderConditions(r);
    fill(documents, h('h2', {}, 'Spec'), h('pre', {}, json(r.spec)), h('h2', {}, 'Status'), h('pre', {}, json(r.status || {})));
  }

  function renderOperations(r) {
    const list = r.spec?.operations || [];
    if (!ctx.may('invokeOperations') || list.length === 0) {
      return fill(ops, h('h2', {}, 'Operations'), list.length ? h('ul', {}, list.map((o) => h('li', {}, `${o.name} — price ${price(o.price ?? 0)}`))) : h('p', { class: 'muted' }, 'none'));
    }
    const body = h('textarea', { id: 'invoke-body', rows: 3, placeholder: 'JSON body (optional)', 'aria-label': 'request body' });
    fill(ops, h('h2', {}, 'Operations'), body, h('div', { class: 'buttons' }, list.map((o) =>
      h('button', { class: 'op', 'data-op': o.name, title: o.description || null, onclick: () => invoke(o.name, body.value) }, `${o.name} · ${price(o.price ?? 0)}`))));
  }

  async function invoke(op, text) {
    let payload;
    if (text.trim()) {
      try { payload = JSON.parse(text); } catch (e) { return fill(result, problemBox(new Error(`the body is not JSON: ${e.message}`))); }
    }
    fill(result, h('p', { class: 'muted' }, `Invoking ${op}…`));
    let answer;
    let failure = null;
    try {
      answer = await call('POST', `/api/v1/resources/${encodeURIComponent(name)}/operations/${encodeURIComponent(op)}`, payload ?? {});
    } catch (e) {
      failure = e;
      answer = e.problem || {};
    }
    const inv = answer.invocation;
    fill(result,
      failure ? problemBox(failure) : h('div', { class: 'ok' }, `${op} succeeded`),
      inv ? ledgerTable([inv], { id: 'invoke-record' }) : null,
      answer.response ? h('details', { open: true }, h('summary', {}, `Upstream answered ${answer.response.status}`), h('pre', {}, json(answer.response.body))) : null);
    loadInvocations();
  }

  function renderBinding(r) {
    if (r.spec?.accessMode !== 'Exclusive') return fill(binding);
    const lease = r.status?.binding;
    const mine = lease && lease.holder === ctx.who.name;
    const buttons = [];
    if (ctx.may('bindResources')) {
      if (!lease || mine) buttons.push(h('button', { id: 'bind', onclick: () => bind('POST') }, mine ? 'Renew (5 min)' : 'Bind (5 min)'));
      if (mine || (lease && ctx.may('writeResources'))) buttons.push(h('button', { id: 'unbind', onclick: () => bind('DELETE') }, 'Unbind'));
    }
    fill(binding, h('h2', {}, 'Binding'),
      h('p', { id: 'binding-state' }, lease ? `Bound by ${lease.holder} until ${lease.expiresAt}` : 'Free: an app binds it before invoking.'),
      h('div', { class: 'buttons' }, buttons));
  }

  async function bind(method) {
    try {
      await call(method, `/api/v1/resources/${encodeURIComponent(name)}/binding`, method === 'POST' ? { ttlSeconds: 300 } : undefined);
      await load();
    } catch (e) {
      fill(problems, problemBox(e));
    }
  }

  function renderConditions(r) {
    const list = r.status?.conditions || [];
    fill(conditions, h('h2', {}, 'Conditions'), list.length === 0 ? h('p', { class: 'muted' }, 'none') :
      h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, ['Type', 'Status', 'Reason', 'Message', 'Since'].map((c) => h('th', {}, c)))),
        h('tbody', {}, list.map((c) => h('tr', { class: c.status === 'False' ? 'failed' : null },
          h('td', {}, c.type), h('td', {}, c.status), h('td', {}, c.reason || ''), h('td', {}, c.message || ''),
          h('td', { title: c.lastTransitionTime || '' }, c.lastTransitionTime ? age(c.lastTransitionTime) : ''))))));
  }

  async function loadChart() {
    const to = Date.now();
    const from = to - 3600 * 1000;
    try {
      const page = await call('GET', `/api/v1/resources/${encodeURIComponent(name)}/telemetry?from=${encodeURIComponent(new Date(from).toISOString())}&limit=1000`);
      const items = [...(page.items || [])].sort((a, b) => Date.parse(a.ts) - Date.parse(b.ts));
      fill(chart, h('h2', {}, 'Telemetry, last hour'), telemetryChart(items, from, to));
    } catch (e) {
      fill(chart, h('h2', {}, 'Telemetry'), problemBox(e));
    }
  }

  async function loadInvocations() {
    if (!ctx.may('invokeOperations') && !ctx.may('readAllInvocations')) return fill(invocations);
    try {
      const page = await call('GET', `/api/v1/invocations?resource=${encodeURIComponent(name)}&limit=10`);
      fill(invocations, h('h2', {}, 'Last invocations'), (page.items || []).length ? ledgerTable(page.items, {}) : h('p', { class: 'muted' }, 'none'));
    } catch (e) {
      fill(invocations, h('h2', {}, 'Last invocations'), problemBox(e));
    }
  }

  function renderEvents() {
    fill(events, seen.slice(0, 20).map((ev) => h('li', {}, h('span', { class: 'muted' }, age(ev.time), ' '), ev.type.replace('io.triad.', ''))));
    if (seen.length === 0) events.appendChild(h('li', { class: 'muted' }, 'none since this page opened'));
  }

  const reloadChart = debounce(loadChart, 200);
  const reloadInvocations = debounce(loadInvocations, 200);
  load();
  loadChart();
  loadInvocations();
  renderEvents();
  const tick = setInterval(reloadChart, 15000); // the time axis advances even when nothing is sent
  return {
    onEvent(ev) {
      // A project may share the name: only this resource's events.
      if (ev.subject !== name || ev.source !== `/triad/resources/${name}`) return;
      seen.unshift(ev);
      renderEvents();
      if (ev.type.startsWith('io.triad.operation.')) return reloadInvocations();
      if (ev.type === 'io.triad.resource.deleted') return fill(problems, problemBox(new Error(`${name} was deleted`)));
      if (ev.data?.metadata) {
        resource = ev.data;
        render();
      }
      if (ev.type === 'io.triad.resource.status') reloadChart();
    },
    close() { clearInterval(tick); },
  };
}

// MARK: ledger

function ledgerTable(items, attrs) {
  return h('table', { class: 'grid ledger', ...attrs },
    h('thead', {}, h('tr', {}, ['Started', 'Resource', 'Operation', 'Caller', 'State', 'HTTP', 'Price', 'Charged'].map((c) => h('th', {}, c)))),
    h('tbody', {}, items.map((i) => h('tr', { 'data-id': i.id, class: i.state === 'Failed' || i.state === 'TimedOut' ? 'failed' : null },
      h('td', { title: i.startedAt || '' }, i.startedAt ? age(i.startedAt) : ''),
      h('td', {}, h('a', { href: `#/r/${encodeURIComponent(i.resource)}` }, i.resource)),
      h('td', {}, i.operation), h('td', {}, i.caller),
      h('td', { class: 'state', title: i.message || i.reason || '' }, i.state),
      h('td', {}, i.httpStatus ?? ''), h('td', { class: 'price' }, price(i.price)), h('td', { class: 'charged' }, price(i.charged))))));
}

export function ledgerView(ctx, el) {
  const resource = h('input', { id: 'ledger-resource', placeholder: 'resource' });
  const caller = h('input', { id: 'ledger-caller', placeholder: 'caller' });
  const out = h('div', { id: 'ledger' });
  fill(el, h('h1', {}, 'Ledger'),
    h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); load(); } }, resource, caller, h('button', { type: 'submit' }, 'Filter')),
    out);
  async function load() {
    const params = new URLSearchParams({ limit: '100' });
    if (resource.value.trim()) params.set('resource', resource.value.trim());
    if (caller.value.trim()) params.set('caller', caller.value.trim());
    try {
      const page = await call('GET', `/api/v1/invocations?${params}`);
      const items = page.items || [];
      const shown = items.reduce((sum, i) => sum + (typeof i.charged === 'number' ? i.charged : 0), 0);
      fill(out,
        h('p', { id: 'ledger-total' }, `${items.length} shown, charged ${price(shown)}`,
          ` · all ${page.metadata?.matched ?? items.length} matching: ${price(page.metadata?.totalPrice ?? shown)}`),
        items.length ? ledgerTable(items, {}) : h('p', { class: 'muted' }, 'No invocations match.'));
    } catch (e) {
      fill(out, problemBox(e));
    }
  }
  const reload = debounce(load, 200);
  load();
  return { onEvent(ev) { if (ev.type === 'io.triad.operation.completed' || ev.type === 'io.triad.operation.invoked') reload(); } };
}

// MARK: events

export const EVENT_TYPES = [
  'io.triad.resource.created', 'io.triad.resource.updated', 'io.triad.resource.deleted', 'io.triad.resource.status',
  'io.triad.binding.acquired', 'io.triad.binding.released', 'io.triad.operation.invoked', 'io.triad.operation.completed',
];

export function eventsView(ctx, el) {
  const shown = new Set(EVENT_TYPES);
  const list = h('ol', { id: 'event-list', class: 'events' });
  const boxes = EVENT_TYPES.map((t) => {
    const box = h('input', { type: 'checkbox', checked: true, value: t, onchange: () => { if (box.checked) shown.add(t); else shown.delete(t); render(); } });
    return h('label', { class: 'check' }, box, t.replace('io.triad.', ''));
  });
  fill(el, h('h1', {}, 'Events'), h('div', { class: 'filters' }, boxes), list);
  function render() {
    const items = ctx.recentEvents().filter((ev) => shown.has(ev.type)).slice(0, 200);
    fill(list, items.map((ev) => h('li', {},
      h('span', { class: 'muted' }, `#${ev.id} `, ev.time ? new Date(ev.time).toLocaleTimeString() : ''), ' ',
      h('strong', {}, ev.type.replace('io.triad.', '')), ' ',
      h('a', { href: `#/r/${encodeURIComponent(ev.subject || '')}` }, ev.subject || ''))));
    if (items.length === 0) list.appendChild(h('li', { class: 'muted' }, 'No events since sign-in; they appear here as they happen.'));
  }
  render();
  return { onEvent() { render(); } };
}
