// DOM building without HTML parsing: text always goes in as text nodes and
// attributes through setAttribute, so nothing that came from the API can
// become markup or script. (The page's CSP also refuses HTML-string sinks.)

const SVG_NS = 'http://www.w3.org/2000/svg';

function set(el, attrs) {
  if (!attrs) return;
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      const names = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
      el.setAttribute('class', names);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'style') {
      // CSSOM, not a style attribute: allowed under `style-src 'self'`.
      Object.assign(el.style, value);
    } else if (key === 'value' && 'value' in el) {
      el.value = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: `h('td', {class: 'num'}, 'text', otherNode)`. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  set(el, attrs);
  return append(el, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  set(el, attrs);
  return append(el, children);
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A link inside the console: `#/tasks/<id>`; parts are URI-encoded. */
export function link(text, ...parts) {
  return h('a', { href: route(...parts) }, text);
}

export function route(...parts) {
  const query = parts.length && typeof parts[parts.length - 1] === 'object' ? parts.pop() : null;
  let href = '#/' + parts.map((p) => encodeURIComponent(String(p))).join('/');
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== '' && v !== undefined && v !== null) q.set(k, v);
    const text = q.toString();
    if (text) href += '?' + text;
  }
  return href;
}

/** A message box; kind is `error`, `info` or `ok`. */
export function notice(kind, ...children) {
  return h('div', { class: ['notice', kind], role: kind === 'error' ? 'alert' : 'status' }, ...children);
}

/** A labelled form control. */
export function field(label, control, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'label' }, label), control, hint ? h('span', { class: 'hint' }, hint) : null);
}

/** Collapsible preformatted text (long tool outputs, attributes). */
export function pre(text, { cls, summary } = {}) {
  const body = h('pre', { class: ['code', cls] }, text);
  if (!summary) return body;
  return h('details', { class: 'more' }, h('summary', null, summary), body);
}
