// Usage: tokens, cost, latency and error rate over time per tenant, agent
// or model, from the trace aggregates (GET /v1/traces/aggregates), as SVG
// line charts and a totals table.

import { get } from './api.js';
import { field, h, notice, replace, route } from './dom.js';
import * as fmt from './format.js';
import { lineChart } from './charts.js';

// Range -> bucket width; every choice stays well under the collector's
// bucket limit.
const RANGES = {
  '1h': { ms: 3_600_000, interval: '1m', label: 'last hour' },
  '6h': { ms: 21_600_000, interval: '5m', label: 'last 6 hours' },
  '24h': { ms: 86_400_000, interval: '30m', label: 'last day' },
  '7d': { ms: 604_800_000, interval: '6h', label: 'last week' },
};

export async function usagePage(main, { query, signal }) {
  const by = ['tenant', 'agent', 'model'].includes(query.get('by')) ? query.get('by') : 'agent';
  const rangeKey = RANGES[query.get('range')] ? query.get('range') : '1h';
  const range = RANGES[rangeKey];
  const agent = h('input', { name: 'agent', value: query.get('agent') ?? '', placeholder: 'any', 'aria-label': 'Agent' });
  const bySelect = h('select', { name: 'by', 'aria-label': 'Group by' }, ['tenant', 'agent', 'model'].map((v) => h('option', { value: v, selected: v === by }, v)));
  const rangeSelect = h('select', { name: 'range', 'aria-label': 'Range' }, Object.entries(RANGES).map(([k, r]) => h('option', { value: k, selected: k === rangeKey }, r.label)));
  const form = h(
    'form',
    {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        window.location.hash = route('usage', { by: bySelect.value, range: rangeSelect.value, agent: agent.value.trim() });
      },
    },
    field('Group by', bySelect),
    field('Range', rangeSelect),
    field('Agent', agent),
    h('button', { type: 'submit' }, 'Show'),
  );
  const body = h('div', { id: 'usage-body' }, h('p', { class: 'muted' }, 'Loading…'));
  replace(main, h('h1', null, 'Usage'), form, body);

  const step = { '1m': 60_000, '5m': 300_000, '30m': 1_800_000, '6h': 21_600_000 }[range.interval];
  // Whole buckets, the last one holding now.
  const to = Math.ceil(Date.now() / step) * step;
  const from = to - range.ms;
  let result;
  try {
    result = await get('/v1/traces/aggregates', { by, interval: range.interval, from_ms: from, to_ms: to, agent: query.get('agent') }, signal);
  } catch (error) {
    if (error.name !== 'AbortError') replace(body, notice('error', error.message));
    return;
  }
  const keyOf = (b) => (by === 'tenant' ? 'tenant' : (b[by] ?? '(none)'));
  const groups = new Map();
  for (const b of result.data) {
    const k = keyOf(b);
    if (!groups.has(k)) groups.set(k, new Map());
    groups.get(k).set(b.bucket_start_ms, b);
  }
  const buckets = [];
  for (let t = result.from_ms - (result.from_ms % result.interval_ms); t < result.to_ms; t += result.interval_ms) buckets.push(t);
  const series = (value, fill) =>
    [...groups.entries()].map(([name, rows]) => ({
      name,
      points: buckets.map((t) => {
        const b = rows.get(t);
        return [t + result.interval_ms / 2, b ? value(b) : fill];
      }),
    }));
  const xFormat = (t) => (range.ms > 86_400_000 ? fmt.time(t).slice(5, 16) : fmt.clock(t).slice(0, 5));
  const unit = result.unit === 'generation' ? 'generations' : 'traces';
  const totals = [...groups.entries()].map(([name, rows]) => {
    const all = [...rows.values()];
    const sum = (f) => all.reduce((a, b) => a + f(b), 0);
    const count = sum((b) => b.count);
    return {
      name,
      count,
      errors: sum((b) => b.errors),
      tokens: sum((b) => b.total_tokens),
      cost: sum((b) => b.cost_usd),
      latency: count ? sum((b) => b.latency_ms.avg * b.count) / count : 0,
    };
  });
  replace(
    body,
    result.data.length ? null : notice('info', `No ${unit} in the ${range.label}.`),
    h(
      'div',
      { class: 'chart-grid' },
      lineChart({ id: 'chart-tokens', title: `Tokens per ${range.interval}`, series: series((b) => b.total_tokens, 0), from, to, yFormat: fmt.tokens, xFormat }),
      lineChart({ id: 'chart-cost', title: `Cost (USD) per ${range.interval}`, series: series((b) => b.cost_usd, 0), from, to, yFormat: fmt.cost, xFormat }),
      lineChart({
        id: 'chart-latency',
        title: `Average latency of ${unit}`,
        series: series((b) => b.latency_ms.avg, null),
        from,
        to,
        yFormat: fmt.duration,
        xFormat,
      }),
      lineChart({ id: 'chart-errors', title: `Error rate of ${unit}`, series: series((b) => (b.count ? b.errors / b.count : 0), null), from, to, yFormat: fmt.percent, xFormat }),
    ),
    h(
      'table',
      { class: 'list', id: 'usage-totals' },
      h('thead', null, h('tr', null, [by, unit].map((w) => w[0].toUpperCase() + w.slice(1)).concat(['Errors', 'Error rate', 'Tokens', 'Cost', 'Avg latency']).map((t) => h('th', null, t)))),
      h(
        'tbody',
        null,
        totals.map((t) =>
          h(
            'tr',
            null,
            h('td', null, t.name),
            h('td', { class: 'num' }, String(t.count)),
            h('td', { class: 'num' }, String(t.errors)),
            h('td', { class: 'num' }, fmt.percent(t.count ? t.errors / t.count : 0)),
            h('td', { class: 'num' }, fmt.tokens(t.tokens)),
            h('td', { class: 'num' }, fmt.cost(t.cost)),
            h('td', { class: 'num' }, fmt.duration(t.latency)),
          ),
        ),
      ),
    ),
  );
}
