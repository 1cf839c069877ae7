// Tasks: the list with filters and a form to run one; one task live from
// its event stream (model steps, tool calls, approvals with approve and
// reject, the final answer) with cancel.

import { ApiError, call, events, get, memory, newTraceparent } from './api.js';
import { field, h, link, notice, pre, replace, route } from './dom.js';
import * as fmt from './format.js';

const STATUSES = ['queued', 'running', 'awaiting_approval', 'succeeded', 'failed', 'cancelled'];
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
const REFRESH_MS = 5000;

export function statusBadge(status) {
  return h('span', { class: ['badge', `status-${status}`], dataset: { status } }, status.replace('_', ' '));
}

/** The trace id the console gave a task it submitted, if any. */
function traceOf(taskId) {
  return memory.get('traces', {})[taskId] ?? null;
}

// === list ===

export async function taskList(main, { query, signal }) {
  const agent = h('input', { name: 'agent', value: query.get('agent') ?? '', placeholder: 'any', 'aria-label': 'Agent filter' });
  const status = h(
    'select',
    { name: 'status', 'aria-label': 'Status filter' },
    h('option', { value: '' }, 'any'),
    STATUSES.map((s) => h('option', { value: s, selected: query.get('status') === s }, s.replace('_', ' '))),
  );
  const filters = h(
    'form',
    {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        window.location.hash = route('tasks', { agent: agent.value.trim(), status: status.value });
      },
    },
    field('Agent', agent),
    field('Status', status),
    h('button', { type: 'submit' }, 'Filter'),
  );
  const table = h('div', { id: 'task-table' }, h('p', { class: 'muted' }, 'Loading…'));
  replace(main, h('div', { class: 'title-row' }, h('h1', null, 'Tasks')), h('div', { class: 'columns wide-left' }, h('div', null, filters, table), runForm(query.get('agent') ?? '')));

  let cursor = query.get('cursor') ?? '';
  async function load() {
    let page;
    try {
      page = await get('/v1/tasks', { agent: query.get('agent'), status: query.get('status'), limit: 50, cursor }, signal);
    } catch (error) {
      if (error.name !== 'AbortError') replace(table, notice('error', error.message));
      return;
    }
    replace(
      table,
      page.tasks.length
        ? h(
            'table',
            { class: 'list' },
            h('thead', null, h('tr', null, ['Task', 'Agent', 'Status', 'Input', 'Steps', 'Tokens', 'Created'].map((t) => h('th', null, t)))),
            h(
              'tbody',
              null,
              page.tasks.map((t) =>
                h(
                  'tr',
                  { dataset: { task: t.id } },
                  h('td', { class: 'mono' }, link(fmt.shortId(t.id), 'tasks', t.id)),
                  h('td', null, link(t.agent, 'agents', t.agent), h('span', { class: 'muted small' }, ` v${t.agentVersion}`)),
                  h('td', null, statusBadge(t.status)),
                  h('td', { class: 'clip', title: t.input }, t.input),
                  h('td', { class: 'num' }, String(t.steps ?? 0)),
                  h('td', { class: 'num' }, fmt.tokens(t.usage.inputTokens + t.usage.outputTokens)),
                  h('td', { title: fmt.time(t.createdAt) }, fmt.ago(t.createdAt)),
                ),
              ),
            ),
          )
        : notice('info', 'No tasks match.'),
      page.nextCursor ? h('a', { class: 'button', href: route('tasks', { agent: query.get('agent'), status: query.get('status'), cursor: page.nextCursor }) }, 'Older') : null,
    );
  }
  await load();
  const timer = setInterval(load, REFRESH_MS);
  signal.addEventListener('abort', () => clearInterval(timer));
}

function runForm(agentName) {
  const agent = h('input', { name: 'agent', value: agentName, required: true, 'aria-label': 'Agent' });
  const input = h('textarea', { name: 'input', rows: 4, required: true, 'aria-label': 'Input' });
  const sessionId = h('input', { name: 'session', placeholder: 'optional', 'aria-label': 'Session' });
  const out = h('div', { 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Run task');
  return h(
    'form',
    {
      class: 'panel run-form',
      id: 'run-form',
      onsubmit: async (e) => {
        e.preventDefault();
        replace(out);
        button.disabled = true;
        // The console picks the trace id, so the task page can link its trace.
        const trace = newTraceparent();
        try {
          const task = await call('POST', `/v1/agents/${encodeURIComponent(agent.value.trim())}/tasks`, {
            body: { input: input.value, ...(sessionId.value.trim() ? { sessionId: sessionId.value.trim() } : {}) },
            headers: { traceparent: trace.header },
          });
          memory.set('traces', { ...memory.get('traces', {}), [task.id]: trace.traceId });
          window.location.hash = route('tasks', task.id);
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          replace(out, notice('error', error.field ? h('code', null, error.field) : null, error.field ? ' ' : null, error.message));
        } finally {
          button.disabled = false;
        }
      },
    },
    h('h2', null, 'Run a task'),
    field('Agent', agent),
    field('Input', input),
    field('Session', sessionId),
    h('div', { class: 'actions' }, button),
    out,
  );
}

// === one task, live ===

export async function taskPage(main, { id, signal }) {
  replace(main, h('h1', null, `Task ${fmt.shortId(id)}`), h('p', { class: 'muted' }, 'Loading…'));
  let task;
  try {
    task = await get(`/v1/tasks/${encodeURIComponent(id)}`, null, signal);
  } catch (error) {
    if (error.name !== 'AbortError') replace(main, h('h1', null, 'Task'), notice('error', error.message));
    return;
  }
  const statusSlot = h('span', { id: 'task-status' });
  const meta = h('div', { class: 'meta' });
  const actions = h('div', { class: 'actions' });
  const approvalSlot = h('div', { id: 'approval' });
  const answer = h('div', { class: 'answer', id: 'final-answer', 'aria-live': 'polite' });
  const timeline = h('ol', { class: 'timeline', id: 'timeline' });
  const streamState = h('span', { class: 'muted small', id: 'stream-state' });
  const traceId = traceOf(id);
  let streamed = ''; // delta content of the running attempt

  function renderHeader() {
    replace(statusSlot, statusBadge(task.status));
    replace(
      meta,
      h('span', null, 'agent ', link(task.agent, 'agents', task.agent), ` v${task.agentVersion}`),
      h('span', null, `created ${fmt.time(task.createdAt)}`),
      task.finishedAt ? h('span', null, `took ${fmt.duration(Date.parse(task.finishedAt) - Date.parse(task.startedAt ?? task.createdAt))}`) : null,
      h('span', null, `attempts ${task.attempts}`),
      h('span', null, `tokens ${task.usage.inputTokens} in / ${task.usage.outputTokens} out`),
      task.sessionId ? h('span', null, `session ${task.sessionId}`) : null,
    );
    const cancellable = !TERMINAL.has(task.status) && !task.cancelRequested;
    replace(
      actions,
      cancellable ? h('button', { type: 'button', class: 'danger', id: 'cancel-task', onclick: cancel }, 'Cancel task') : null,
      traceId
        ? h('a', { class: 'button', id: 'open-trace', href: route('traces', traceId) }, 'Open trace')
        : h('a', { class: 'button', href: route('traces', { agent: task.agent, from_ms: Date.parse(task.createdAt) - 60_000 }) }, 'Find trace'),
    );
    renderApproval();
    if (task.status === 'succeeded') replace(answer, h('h2', null, 'Final answer'), h('div', { class: 'answer-text' }, task.output));
    else if (task.status === 'failed') replace(answer, h('h2', null, 'Failed'), notice('error', task.error ?? 'failed'));
    else if (task.status === 'cancelled') replace(answer, h('h2', null, 'Cancelled'));
    else if (streamed) replace(answer, h('h2', null, 'Answer so far'), h('div', { class: 'answer-text streaming' }, streamed));
    else replace(answer);
  }

  function renderApproval() {
    const a = task.status === 'awaiting_approval' ? task.approval : null;
    if (!a) {
      replace(approvalSlot);
      return;
    }
    const comment = h('input', { name: 'comment', placeholder: 'comment (optional)', 'aria-label': 'Comment' });
    const out = h('div', { 'aria-live': 'polite' });
    const decide = async (approve) => {
      for (const b of buttons) b.disabled = true;
      try {
        const decided = await call('POST', `/v1/tasks/${encodeURIComponent(id)}/${approve ? 'approve' : 'reject'}`, {
          body: { comment: comment.value, callId: a.callId },
        });
        // The stream may already be ahead of this answer: never step back.
        if (task.status === 'awaiting_approval') {
          task.status = decided.status;
          task.approval = null;
        }
        renderHeader();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        replace(out, notice('error', error.message));
        for (const b of buttons) b.disabled = false;
      }
    };
    const buttons = [
      h('button', { type: 'button', class: 'primary', id: 'approve', onclick: () => decide(true) }, 'Approve'),
      h('button', { type: 'button', class: 'danger', id: 'reject', onclick: () => decide(false) }, 'Reject'),
    ];
    replace(
      approvalSlot,
      h(
        'section',
        { class: 'panel approval' },
        h('h2', null, 'Approval needed'),
        h('p', null, h('strong', null, a.tool), ' — ', a.prompt),
        h('div', { class: 'label' }, 'Arguments'),
        pre(fmt.prettyMaybeJson(a.arguments)),
        h('p', { class: 'muted small' }, `step ${a.step} · call ${a.callId} · expires ${fmt.time(a.expiresAt)} · on timeout: ${a.onTimeout || 'reject'}`),
        h('div', { class: 'actions' }, comment, ...buttons),
        out,
      ),
    );
  }

  async function cancel() {
    try {
      const cancelled = await call('POST', `/v1/tasks/${encodeURIComponent(id)}/cancel`);
      if (!TERMINAL.has(task.status)) {
        task.cancelRequested = true;
        if (TERMINAL.has(cancelled.status)) task.status = cancelled.status;
      }
      renderHeader();
    } catch (error) {
      if (error instanceof ApiError) replace(actions, notice('error', error.message));
      else throw error;
    }
  }

  replace(
    main,
    h('div', { class: 'title-row' }, h('h1', null, 'Task ', h('span', { class: 'mono' }, id)), statusSlot),
    meta,
    actions,
    h('section', { class: 'panel' }, h('h2', null, 'Input'), h('div', { class: 'answer-text' }, task.input)),
    approvalSlot,
    answer,
    h('section', { class: 'panel' }, h('div', { class: 'title-row' }, h('h2', null, 'Events'), streamState), timeline),
  );
  renderHeader();

  // Follow the stream; reconnect after a break, resuming after the last
  // event seen, until the terminal event.
  let lastEventId = '';
  let done = false;
  while (!done && !signal.aborted) {
    replace(streamState, 'live');
    try {
      for await (const message of events(`/v1/tasks/${encodeURIComponent(id)}/events`, { lastEventId, signal })) {
        lastEventId = message.id || lastEventId;
        let data;
        try {
          data = JSON.parse(message.data);
        } catch {
          continue;
        }
        if (message.event === 'error') {
          timeline.append(h('li', { class: 'event error' }, h('span', { class: 'badge error' }, 'stream error'), ` ${data.message}`));
          break;
        }
        done = apply(message.event, data) || done;
      }
      if (!done) await sleep(1000, signal);
    } catch (error) {
      if (error.name === 'AbortError') return;
      replace(streamState, `stream interrupted: ${error.message}; retrying`);
      await sleep(2000, signal);
    }
  }
  if (signal.aborted) return;
  replace(streamState, 'ended');
  // The stored row adds usage and timings once the orchestrator has
  // projected the terminal event (a moment after the stream says so).
  for (let tries = 0; tries < 20 && !signal.aborted; tries++) {
    try {
      const stored = await get(`/v1/tasks/${encodeURIComponent(id)}`, null, signal);
      if (TERMINAL.has(stored.status)) {
        task = stored;
        renderHeader();
        break;
      }
    } catch {
      // The events already said how it ended.
      break;
    }
    await sleep(500, signal);
  }

  /** Records one event; returns true for a terminal one. */
  function apply(kind, e) {
    // Deltas show in the answer so far, not one line each.
    if (kind !== 'delta') timeline.append(eventItem(kind, e));
    switch (kind) {
      case 'started':
        task.status = 'running';
        streamed = '';
        break;
      case 'delta':
        streamed += e.content ?? '';
        break;
      case 'approval_requested':
        task.status = 'awaiting_approval';
        task.approval = e;
        break;
      case 'approval_resolved':
        if (task.status === 'awaiting_approval') task.status = 'queued';
        task.approval = null;
        break;
      case 'completed':
        task.status = 'succeeded';
        task.output = e.output;
        break;
      case 'failed':
        task.status = 'failed';
        task.error = e.error;
        break;
      case 'cancelled':
        task.status = 'cancelled';
        break;
      case 'cancel_requested':
        task.cancelRequested = true;
        break;
      default:
        break;
    }
    renderHeader();
    return TERMINAL.has(task.status) && ['completed', 'failed', 'cancelled'].includes(kind);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

function eventItem(kind, e) {
  const at = e.at ? fmt.clock(Date.parse(e.at)) : '';
  const head = (label, cls, ...rest) => h('div', { class: 'event-head' }, h('span', { class: 'time' }, at), h('span', { class: ['badge', cls] }, label), ...rest);
  switch (kind) {
    case 'started':
      return h('li', { class: 'event' }, head('started', null, ` attempt ${e.attempt}`, e.worker ? ` on ${e.worker}` : ''));
    case 'delta':
      return h('li', { class: 'event delta' }, head('delta', null, ' ', h('span', { class: 'muted' }, e.content)));
    case 'model_step':
      return h(
        'li',
        { class: 'event' },
        head('model', 'model', ` step ${e.step} · ${e.model} · ${e.usage.inputTokens} in / ${e.usage.outputTokens} out · ${e.finishReason}`),
        e.content ? h('div', { class: 'event-body' }, e.content) : null,
        e.toolCalls?.length ? h('ul', { class: 'calls' }, e.toolCalls.map((c) => h('li', null, h('code', null, c.name), ' ', h('span', { class: 'mono small' }, c.arguments)))) : null,
      );
    case 'tool_call':
      return h('li', { class: 'event tool' }, head('tool call', 'tool', ' ', h('code', null, e.name), ` step ${e.step}`), pre(fmt.prettyMaybeJson(e.arguments), { summary: 'arguments' }));
    case 'tool_result':
      return h(
        'li',
        { class: ['event', 'tool', e.isError ? 'error' : null] },
        head(e.isError ? 'tool error' : 'tool result', e.isError ? 'error' : 'tool', ' ', h('code', null, e.name), ` ${fmt.duration(e.durationMs)}`),
        pre(fmt.prettyMaybeJson(e.output), { summary: 'output' }),
      );
    case 'approval_requested':
      return h('li', { class: 'event approval' }, head('approval requested', 'warn', ' ', h('code', null, e.tool), ` ${e.prompt ?? ''}`));
    case 'approval_resolved':
      return h(
        'li',
        { class: 'event approval' },
        head(e.approved ? 'approved' : 'rejected', e.approved ? 'ok' : 'error', e.by ? ` by ${e.by}` : '', e.timedOut ? ' (timed out)' : '', e.comment ? ` — ${e.comment}` : ''),
      );
    case 'retrying':
      return h('li', { class: 'event' }, head('retrying', 'warn', ` attempt ${e.attempt} in ${fmt.duration(e.backoffMs)}: ${e.error}`));
    case 'completed':
      return h('li', { class: 'event' }, head('completed', 'ok', ` ${e.model ?? ''} · ${e.usage?.inputTokens ?? 0} in / ${e.usage?.outputTokens ?? 0} out`));
    case 'failed':
      return h('li', { class: 'event error' }, head('failed', 'error', ` ${e.error}`));
    case 'cancel_requested':
      return h('li', { class: 'event' }, head('cancel requested', 'warn'));
    case 'cancelled':
      return h('li', { class: 'event' }, head('cancelled', 'warn', e.reason ? ` ${e.reason}` : ''));
    default:
      return h('li', { class: 'event' }, head(kind, null));
  }
}
