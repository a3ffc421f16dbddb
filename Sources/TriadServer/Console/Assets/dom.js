// DOM helpers. Every datum reaches the page as text (textContent, attribute values): nothing
// from the API is ever parsed as HTML, so a resource named `<img onerror=…>` stays a name.

/** h('td', {class: 'phase'}, 'Ready', child…): an element; null/false children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces what `el` holds. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "3 s", "5 min", "2 h", "4 d" since an RFC 3339 time. */
export function age(time, now = Date.now()) {
  const t = Date.parse(time);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

export function price(n) {
  return typeof n === 'number' ? (Math.round(n * 1e6) / 1e6).toString() : '';
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}
