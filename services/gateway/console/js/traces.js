// Traces: the list with filters (GET /v1/traces) and one trace as a
// waterfall (GET /v1/traces/{id}): observations as bars on a time axis,
// nested, with tokens, cost, errors, and input/output where recorded.

import { get } from './api.js';
import { field, h, link, notice, pre, replace, route } from './dom.js';
import * as fmt from './format.js';

const RANGES = [
  ['', 'any time'],
  ['3600000', 'last hour'],
  ['86400000', 'last day'],
  ['604800000', 'last week'],
];

// === list ===

export async function traceList(main, { query, signal }) {
  const input = (name, label, attrs = {}) => field(label, h('input', { name, value: query.get(name) ?? '', 'aria-label': label, ...attrs }));
  const since = h(
    'select',
    { name: 'since', 'aria-label': 'Started' },
    RANGES.map(([v, t]) => h('option', { value: v, selected: (query.get('since') ?? '') === v }, t)),
  );
  const status = h(
    'select',
    { name: 'status', 'aria-label': 'Status' },
    [['', 'any'], ['ok', 'ok'], ['error', 'with errors']].map(([v, t]) => h('option', { value: v, selected: (query.get('status') ?? '') === v }, t)),
  );
  const openId = h('input', { name: 'trace', placeholder: '32 hex digits', 'aria-label': 'Trace id', pattern: '[0-9a-fA-F]{32}' });
  const form = h(
    'form',
    {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        const data = new FormData(form);
        const q = {};
        for (const [k, v] of data.entries()) if (String(v).trim()) q[k] = String(v).trim();
        window.location.hash = route('traces', q);
      },
    },
    input('agent', 'Agent'),
    input('session_id', 'Session'),
    input('user_id', 'User'),
    field('Status', status),
    input('min_latency_ms', 'Min latency (ms)', { inputmode: 'numeric', size: 6 }),
    input('min_cost', 'Min cost ($)', { inputmode: 'decimal', size: 6 }),
    field('Started', since),
    h('button', { type: 'submit' }, 'Filter'),
  );
  const table = h('div', { id: 'trace-table' }, h('p', { class: 'muted' }, 'Loading…'));
  replace(
    main,
    h(
      'div',
      { class: 'title-row' },
      h('h1', null, 'Traces'),
      h(
        'form',
        {
          class: 'inline-form',
          onsubmit: (e) => {
            e.preventDefault();
            if (openId.value.trim()) window.location.hash = route('traces', openId.value.trim().toLowerCase());
          },
        },
        openId,
        h('button', { type: 'submit' }, 'Open trace'),
      ),
    ),
    form,
    table,
  );
  const params = {};
  for (const k of ['agent', 'session_id', 'user_id', 'status', 'min_latency_ms', 'min_cost', 'from_ms', 'cursor']) {
    if (query.get(k)) params[k] = query.get(k);
  }
  if (query.get('since')) params.from_ms = Date.now() - Number(query.get('since'));
  params.limit = 50;
  let page;
  try {
    page = await get('/v1/traces', params, signal);
  } catch (error) {
    if (error.name !== 'AbortError') replace(table, notice('error', error.message));
    return;
  }
  const next = Object.fromEntries(query.entries());
  next.cursor = page.next_cursor;
  replace(
    table,
    page.data.length
      ? h(
          'table',
          { class: 'list' },
          h('thead', null, h('tr', null, ['Started', 'Name', 'Agent', 'Latency', 'Observations', 'Errors', 'Tokens', 'Cost'].map((t) => h('th', null, t)))),
          h(
            'tbody',
            null,
            page.data.map((t) =>
              h(
                'tr',
                { class: t.error_count ? 'has-error' : null },
                h('td', { title: fmt.time(t.start_ms) }, link(fmt.time(t.start_ms), 'traces', t.trace_id)),
                h('td', null, t.name ?? h('span', { class: 'muted' }, fmt.shortId(t.trace_id))),
                h('td', null, t.agent ?? ''),
                h('td', { class: 'num' }, fmt.duration(t.latency_ms)),
                h('td', { class: 'num' }, String(t.observation_count)),
                h('td', { class: 'num' }, t.error_count ? h('span', { class: 'badge error' }, String(t.error_count)) : '0'),
                h('td', { class: 'num' }, fmt.tokens(t.total_tokens)),
                h('td', { class: 'num' }, fmt.cost(t.total_cost_usd)),
              ),
            ),
          ),
        )
      : notice('info', 'No traces match.'),
    page.next_cursor ? h('a', { class: 'button', href: route('traces', next) }, 'Older') : null,
  );
}

// === one trace ===

/** Depth-first rows of the tree: [{node, depth, parentIndex}]. */
function flatten(nodes, depth = 0, out = [], parent = -1) {
  const sorted = [...nodes].sort((a, b) => a.start_ms - b.start_ms || a.end_ms - b.end_ms);
  for (const node of sorted) {
    const index = out.length;
    out.push({ node, depth, parent });
    flatten(node.children ?? [], depth + 1, out, index);
  }
  return out;
}

const isError = (o) => o.status_code === 'error' || o.level === 'ERROR';

/** Attributes that hold what went in and came out, by convention. */
const INPUT_KEYS = ['input.value', 'langfuse.observation.input', 'gen_ai.prompt', 'gen_ai.input.messages', 'gen_ai.tool.call.arguments'];
const OUTPUT_KEYS = ['output.value', 'langfuse.observation.output', 'gen_ai.completion', 'gen_ai.output.messages', 'gen_ai.tool.call.result'];

// The collector stores what it recognised as the observation's input and
// output in their own fields (no longer among the attributes); traces
// stored before that keep them only as attributes.
function recorded(o, field, keys) {
  if (o[field] !== undefined && o[field] !== null && o[field] !== '') return { key: field, value: o[field] };
  const attrs = o.attributes?.attributes ?? {};
  for (const k of keys) if (attrs[k] !== undefined && attrs[k] !== null && attrs[k] !== '') return { key: k, value: attrs[k] };
  return null;
}

function ticks(total) {
  // About five round steps across the trace.
  const raw = total / 5;
  const pow = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? raw;
  const out = [];
  for (let t = 0; t <= total; t += step) out.push(t);
  return out;
}

export async function tracePage(main, { id, signal }) {
  replace(main, h('h1', null, 'Trace'), h('p', { class: 'muted' }, 'Loading…'));
  let trace;
  try {
    trace = await get(`/v1/traces/${encodeURIComponent(id)}`, null, signal);
  } catch (error) {
    if (error.name === 'AbortError') return;
    replace(
      main,
      h('h1', null, 'Trace ', h('span', { class: 'mono' }, id)),
      notice('error', error.status === 404 ? 'No such trace (yet): spans reach the store a few seconds after they end. ' : '', error.message),
      h('button', { type: 'button', onclick: () => window.dispatchEvent(new HashChangeEvent('hashchange')) }, 'Reload'),
    );
    return;
  }
  const rows = flatten(trace.observations ?? []);
  const t0 = trace.start_ms;
  const total = Math.max(trace.end_ms - t0, 1);
  const collapsed = new Set();
  const detail = h('section', { class: 'panel detail', id: 'observation-detail' }, h('p', { class: 'muted' }, 'Select an observation.'));
  const body = h('div', { class: 'waterfall-body', role: 'tree' });

  function hiddenBy(index) {
    for (let p = rows[index].parent; p >= 0; p = rows[p].parent) if (collapsed.has(p)) return true;
    return false;
  }

  function select(row, el) {
    for (const other of body.querySelectorAll('.wf-row.selected')) other.classList.remove('selected');
    el.classList.add('selected');
    const o = row.node;
    const input = recorded(o, 'input', INPUT_KEYS);
    const output = recorded(o, 'output', OUTPUT_KEYS);
    replace(
      detail,
      h('h2', null, o.name, ' ', h('span', { class: ['badge', `type-${o.type}`] }, o.type)),
      isError(o) ? notice('error', 'Error', o.status_message ? `: ${o.status_message}` : '') : null,
      h(
        'dl',
        { class: 'facts' },
        h('dt', null, 'start'),
        h('dd', null, `+${fmt.duration(o.start_ms - t0)} (${fmt.time(o.start_ms)})`),
        h('dt', null, 'duration'),
        h('dd', null, fmt.duration(o.latency_ms)),
        o.model ? [h('dt', null, 'model'), h('dd', null, o.model)] : null,
        h('dt', null, 'tokens'),
        h('dd', null, `${o.input_tokens} in / ${o.output_tokens} out (with children ${o.total_input_tokens} / ${o.total_output_tokens})`),
        h('dt', null, 'cost'),
        h('dd', null, o.cost_usd !== null && o.cost_usd !== undefined ? fmt.cost(o.cost_usd) : 'unpriced', ` (with children ${fmt.cost(o.total_cost_usd)})`),
        h('dt', null, 'span'),
        h('dd', { class: 'mono' }, o.span_id),
      ),
      input ? [h('h3', null, 'Input ', h('span', { class: 'muted small' }, input.key)), pre(fmt.prettyMaybeJson(input.value), { cls: 'io' })] : null,
      output ? [h('h3', null, 'Output ', h('span', { class: 'muted small' }, output.key)), pre(fmt.prettyMaybeJson(output.value), { cls: 'io' })] : null,
      !input && !output ? h('p', { class: 'muted small' }, 'No input or output recorded on this observation.') : null,
      pre(JSON.stringify(o.attributes, null, 2), { summary: 'all attributes' }),
    );
  }

  function render() {
    replace(
      body,
      rows.map((row, index) => {
        if (hiddenBy(index)) return null;
        const o = row.node;
        const left = ((o.start_ms - t0) / total) * 100;
        const width = Math.max(((o.end_ms - o.start_ms) / total) * 100, 0.4);
        const hasChildren = (o.children ?? []).length > 0;
        const toggle = hasChildren
          ? h(
              'button',
              {
                type: 'button',
                class: 'toggle',
                'aria-label': collapsed.has(index) ? 'expand' : 'collapse',
                onclick: (e) => {
                  e.stopPropagation();
                  if (collapsed.has(index)) collapsed.delete(index);
                  else collapsed.add(index);
                  render();
                },
              },
              collapsed.has(index) ? '▸' : '▾',
            )
          : h('span', { class: 'toggle' });
        const el = h(
          'div',
          {
            class: ['wf-row', isError(o) ? 'error' : null],
            role: 'treeitem',
            tabindex: 0,
            'aria-level': row.depth + 1,
            dataset: { span: o.span_id, type: o.type },
            onclick: () => select(row, el),
            onkeydown: (e) => {
              if (e.key === 'Enter' || e.key === ' ') {
                e.preventDefault();
                select(row, el);
              }
            },
          },
          h(
            'div',
            { class: 'wf-name', style: { paddingLeft: `${row.depth * 16}px` }, title: o.name },
            toggle,
            h('span', { class: ['badge', `type-${o.type}`] }, o.type),
            ' ',
            o.name,
          ),
          h(
            'div',
            { class: 'wf-track' },
            h('div', {
              class: ['wf-bar', `type-${o.type}`, isError(o) ? 'error' : null],
              style: { left: `${left}%`, width: `${Math.min(width, 100 - left)}%` },
              title: `${o.name}: ${fmt.duration(o.latency_ms)}`,
            }),
          ),
          h('div', { class: 'wf-num' }, fmt.duration(o.latency_ms)),
          h('div', { class: 'wf-num' }, o.input_tokens || o.output_tokens ? `${o.input_tokens}/${o.output_tokens}` : ''),
          h('div', { class: 'wf-num' }, o.cost_usd ? fmt.cost(o.cost_usd) : ''),
        );
        return el;
      }),
    );
  }

  const axis = h(
    'div',
    { class: 'wf-row wf-axis', 'aria-hidden': 'true' },
    h('div', { class: 'wf-name' }, 'Observation'),
    h(
      'div',
      { class: 'wf-track' },
      ticks(total).map((t) => h('span', { class: 'tick', style: { left: `${(t / total) * 100}%` } }, fmt.duration(t))),
    ),
    h('div', { class: 'wf-num' }, 'Duration'),
    h('div', { class: 'wf-num' }, 'Tokens'),
    h('div', { class: 'wf-num' }, 'Cost'),
  );

  replace(
    main,
    h('div', { class: 'title-row' }, h('h1', null, trace.name ?? 'Trace', ' ', h('span', { class: 'mono small muted' }, trace.trace_id)), link('All traces', 'traces')),
    h(
      'div',
      { class: 'cards' },
      card('Latency', fmt.duration(trace.latency_ms)),
      card('Observations', String(trace.observation_count)),
      card('Errors', String(trace.error_count), trace.error_count ? 'error' : null),
      card('Tokens', `${fmt.tokens(trace.input_tokens)} in / ${fmt.tokens(trace.output_tokens)} out`),
      card('Cost', fmt.cost(trace.total_cost_usd)),
      trace.agent ? card('Agent', trace.agent) : null,
      trace.session_id ? card('Session', trace.session_id) : null,
      trace.user_id ? card('User', trace.user_id) : null,
    ),
    h('section', { class: 'panel waterfall', id: 'waterfall' }, axis, body),
    trace.scores?.length
      ? h(
          'section',
          { class: 'panel' },
          h('h2', null, 'Scores'),
          h('ul', null, trace.scores.map((sc) => h('li', null, h('strong', null, sc.name), ` ${sc.value ?? sc.string_value ?? ''}`, sc.comment ? ` — ${sc.comment}` : ''))),
        )
      : null,
    detail,
  );
  render();
  const firstError = rows.findIndex((r) => isError(r.node));
  const initial = body.querySelectorAll('.wf-row')[firstError >= 0 ? firstError : 0];
  if (initial) select(rows[firstError >= 0 ? firstError : 0], initial);
}

function card(label, value, cls) {
  return h('div', { class: ['card', cls] }, h('div', { class: 'card-label' }, label), h('div', { class: 'card-value' }, value));
}
