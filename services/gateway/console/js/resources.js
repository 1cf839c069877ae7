// Agents and tools: lists, one resource with its spec (YAML or JSON) and
// versions, and the editor that applies a new version with the API's
// validation errors shown at the field.

import { ApiError, call, get, memory } from './api.js';
import { h, link, notice, replace, route, field, pre } from './dom.js';
import { specEditor } from './editor.js';
import * as fmt from './format.js';
import { toYaml } from './yaml.js';

const KINDS = {
  agent: {
    title: 'Agents',
    label: 'Agent',
    path: 'agents',
    template: {
      model: 'sim-model',
      systemPrompt: 'You are a helpful assistant.',
      temperature: 0,
      maxTokens: 256,
    },
  },
  tool: {
    title: 'Tools',
    label: 'Tool',
    path: 'tools',
    template: {
      type: 'api',
      description: 'What the model reads to decide when to call the tool',
      parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] },
      config: { endpoint: 'https://tools.example.com/search' },
      timeout: '10s',
    },
  },
};

const API_VERSION = 'agentmesh.dev/v1alpha1';

// The outcome of an apply, shown once on the page it navigates to.
let flash = null;

/** Versions seen in this tab (the API serves the current one only). */
function rememberVersion(kind, resource) {
  const key = `versions.${kind}.${resource.name}`;
  const seen = memory.get(key, {});
  seen[resource.version] = { spec: resource.spec, updatedAt: resource.updatedAt };
  const kept = Object.keys(seen).map(Number).sort((a, b) => b - a).slice(0, 20);
  memory.set(key, Object.fromEntries(kept.map((v) => [v, seen[v]])));
  memory.remember(`names.${kind}`, resource.name);
}

/**
 * The tenant's applies of `kind` from the audit log, newest first; empty
 * for callers below admin (the log is an admin route).
 */
async function applies(kind, signal) {
  try {
    const page = await get('/v1/audit', { resourceKind: kind, pageSize: 200 }, signal);
    return page.entries.filter((e) => e.action === 'apply');
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    return [];
  }
}

function documentOf(kind, resource) {
  return { apiVersion: API_VERSION, kind: KINDS[kind].label, metadata: { name: resource.name }, spec: resource.spec };
}

// === lists ===

export async function agentList(main, { signal }) {
  replace(main, h('h1', null, 'Agents'), h('p', { class: 'muted' }, 'Loading…'));
  let agents = [];
  let more = false;
  try {
    const page = await get('/v1/agents', { limit: 100 }, signal);
    agents = page.agents;
    more = Boolean(page.nextCursor);
  } catch (error) {
    if (error.name === 'AbortError') return;
    replace(main, h('h1', null, 'Agents'), notice('error', error.message));
    return;
  }
  // How many of the tenant's recent tasks each agent ran.
  const taskCounts = new Map();
  try {
    const page = await get('/v1/tasks', { limit: 100 }, signal);
    for (const task of page.tasks) taskCounts.set(task.agent, (taskCounts.get(task.agent) ?? 0) + 1);
  } catch (error) {
    if (error.name === 'AbortError') return;
  }
  agents.sort((a, b) => String(b.updatedAt).localeCompare(String(a.updatedAt)));
  const open = h('input', { name: 'name', placeholder: 'agent name', required: true, 'aria-label': 'Agent name' });
  replace(
    main,
    h('div', { class: 'title-row' }, h('h1', null, 'Agents'), h('a', { class: 'button primary', href: route('agents', 'new') }, 'New agent')),
    h(
      'form',
      {
        class: 'inline-form',
        onsubmit: (e) => {
          e.preventDefault();
          if (open.value.trim()) window.location.hash = route('agents', open.value.trim());
        },
      },
      open,
      h('button', { type: 'submit' }, 'Open'),
    ),
    more ? h('p', { class: 'muted small' }, 'The first 100 agents by name; open another by its name above.') : null,
    agents.length
      ? h(
          'table',
          { class: 'list', id: 'agents-table' },
          h('thead', null, h('tr', null, ['Name', 'Version', 'Model', 'Recent tasks', 'Updated'].map((t) => h('th', null, t)))),
          h(
            'tbody',
            null,
            agents.map((a) =>
              h(
                'tr',
                null,
                h('td', null, link(a.name, 'agents', a.name)),
                h('td', { class: 'num' }, `v${a.version}`),
                h('td', null, a.model),
                h('td', { class: 'num' }, String(taskCounts.get(a.name) ?? 0)),
                h('td', { title: fmt.time(a.updatedAt) }, fmt.ago(a.updatedAt)),
              ),
            ),
          ),
        )
      : notice('info', 'No agents yet. ', link('Create one', 'agents', 'new'), '.'),
  );
}

export async function toolList(main, { signal }) {
  replace(main, h('h1', null, 'Tools'), h('p', { class: 'muted' }, 'Loading…'));
  let tools;
  try {
    tools = (await get('/v1/tools', null, signal)).tools;
  } catch (error) {
    if (error.name === 'AbortError') return;
    replace(main, h('h1', null, 'Tools'), notice('error', error.message));
    return;
  }
  replace(
    main,
    h('div', { class: 'title-row' }, h('h1', null, 'Tools'), h('a', { class: 'button primary', href: route('tools', 'new') }, 'New tool')),
    tools.length
      ? h(
          'table',
          { class: 'list', id: 'tools-table' },
          h('thead', null, h('tr', null, ['Name', 'Type', 'Version', 'Description', 'Updated'].map((t) => h('th', null, t)))),
          h(
            'tbody',
            null,
            tools.map((t) =>
              h(
                'tr',
                null,
                h('td', null, link(t.name, 'tools', t.name)),
                h('td', null, h('span', { class: 'badge' }, t.spec.type)),
                h('td', { class: 'num' }, `v${t.version}`),
                h('td', { class: 'clip' }, t.spec.description),
                h('td', { title: fmt.time(t.updatedAt) }, fmt.ago(t.updatedAt)),
              ),
            ),
          ),
        )
      : notice('info', 'No tools yet. ', link('Create one', 'tools', 'new'), '.'),
  );
}

// === one resource ===

export async function resourcePage(main, { kind, name, signal }) {
  const k = KINDS[kind];
  if (name === 'new') return renderEditor(main, kind, null);
  replace(main, h('h1', null, `${k.label} ${name}`), h('p', { class: 'muted' }, 'Loading…'));
  let resource;
  try {
    resource = await get(`/v1/${k.path}/${encodeURIComponent(name)}`, null, signal);
  } catch (error) {
    if (error.name === 'AbortError') return;
    replace(main, h('h1', null, `${k.label} ${name}`), notice('error', error.message));
    return;
  }
  rememberVersion(kind, resource);
  let tasks = [];
  if (kind === 'agent') {
    tasks = await get('/v1/tasks', { agent: name, limit: 100 }, signal)
      .then((p) => p.tasks)
      .catch(() => []);
  }
  const history = (await applies(kind, signal)).filter((e) => e.resourceName === resource.name);
  const stored = await get(`/v1/${k.path}/${encodeURIComponent(name)}/versions`, { limit: 100 }, signal)
    .then((p) => p.versions)
    .catch(() => []);
  renderEditor(main, kind, resource, tasks, history, stored);
}

function specView(kind, resource) {
  const doc = documentOf(kind, resource);
  const body = h('pre', { class: 'code spec-view', id: 'spec-view' }, toYaml(doc));
  let format = 'yaml';
  const yamlButton = h('button', { type: 'button', class: 'tab active', 'aria-pressed': 'true' }, 'YAML');
  const jsonButton = h('button', { type: 'button', class: 'tab', 'aria-pressed': 'false' }, 'JSON');
  const show = (which) => {
    format = which;
    replace(body, which === 'yaml' ? toYaml(doc) : JSON.stringify(doc, null, 2));
    yamlButton.classList.toggle('active', which === 'yaml');
    jsonButton.classList.toggle('active', which === 'json');
    yamlButton.setAttribute('aria-pressed', String(which === 'yaml'));
    jsonButton.setAttribute('aria-pressed', String(which === 'json'));
  };
  yamlButton.addEventListener('click', () => show('yaml'));
  jsonButton.addEventListener('click', () => show('json'));
  return { el: h('div', null, h('div', { class: 'tabs' }, yamlButton, jsonButton), body), show, format: () => format };
}

function versionsPanel(kind, resource, tasks, history, stored) {
  const seen = memory.get(`versions.${kind}.${resource.name}`, {});
  const used = new Map();
  for (const t of tasks) used.set(t.agentVersion, (used.get(t.agentVersion) ?? 0) + 1);
  const applied = new Map(history.filter((e) => e.resourceVersion).map((e) => [Number(e.resourceVersion), e]));
  // Versions the API keeps: each one's spec is fetched on view.
  const kept = new Map(stored.map((v) => [Number(v.version), v]));
  const all = new Set([resource.version, ...Object.keys(seen).map(Number), ...used.keys(), ...applied.keys(), ...kept.keys()]);
  const versions = [...all].filter((v) => v > 0).sort((a, b) => b - a);
  const detail = h('div', { class: 'version-detail' });
  const rows = versions.map((v) => {
    const known = seen[v];
    const show = (spec) => replace(detail, h('h3', null, `Version ${v}`), pre(toYaml(documentOf(kind, { ...resource, spec }))));
    const fetchAndShow = () =>
      get(`/v1/${KINDS[kind].path}/${encodeURIComponent(resource.name)}/versions/${v}`)
        .then((old) => show(old.spec))
        .catch((error) => replace(detail, notice('error', error.message)));
    const open = kept.has(v) && !known
      ? h('button', { type: 'button', class: 'link-button', onclick: fetchAndShow }, 'view')
      : known
      ? h(
          'button',
          {
            type: 'button',
            class: 'link-button',
            onclick: () => replace(detail, h('h3', null, `Version ${v}`), pre(toYaml(documentOf(kind, { ...resource, spec: known.spec })))),
          },
          'view',
        )
      : h('span', { class: 'muted small', title: 'The API serves the current version only; this one was not seen in this tab.' }, 'not kept');
    return h(
      'tr',
      { class: v === resource.version ? 'current' : null },
      h('td', { class: 'num' }, `v${v}`, v === resource.version ? h('span', { class: 'badge ok' }, 'current') : null),
      h('td', null, applied.get(v) ? fmt.time(applied.get(v).at) : kept.get(v)?.appliedAt ? fmt.time(kept.get(v).appliedAt) : known?.updatedAt ? fmt.time(known.updatedAt) : ''),
      h('td', null, applied.get(v)?.actor ?? ''),
      kind === 'agent' ? h('td', { class: 'num' }, String(used.get(v) ?? 0)) : null,
      h('td', null, open),
    );
  });
  return h(
    'section',
    { class: 'panel', id: 'versions' },
    h('h2', null, 'Versions'),
    h(
      'table',
      { class: 'list compact' },
      h('thead', null, h('tr', null, h('th', null, 'Version'), h('th', null, 'Applied'), h('th', null, 'By'), kind === 'agent' ? h('th', null, 'Recent tasks') : null, h('th', null, ''))),
      h('tbody', null, rows),
    ),
    h('p', { class: 'muted small' }, 'Who applied each version comes from the audit log (admins).'),
    detail,
  );
}

function renderEditor(main, kind, resource, tasks = [], history = [], stored = []) {
  const k = KINDS[kind];
  const isNew = !resource;
  const spec = isNew ? k.template : resource.spec;
  const editor = specEditor(JSON.stringify(spec, null, 2), { label: `${k.label} spec (JSON)` });
  const nameInput = h('input', { name: 'name', class: 'name-input', value: resource?.name ?? '', readonly: !isNew, placeholder: isNew ? 'or metadata.name of a document' : null, 'aria-label': `${k.label} name` });
  const nameError = h('span', { class: 'field-error', role: 'alert', hidden: true });
  const result = h('div', { class: 'apply-result', 'aria-live': 'polite' });
  const applyButton = h('button', { type: 'submit', class: 'primary' }, isNew ? `Create ${kind}` : 'Apply new version');

  async function apply(event) {
    event.preventDefault();
    replace(result);
    nameError.hidden = true;
    nameInput.removeAttribute('aria-invalid');
    editor.clearError();
    const parsed = editor.parse();
    if (!parsed) {
      replace(result, notice('error', 'The JSON is malformed: see the marked line.'));
      return;
    }
    let body = parsed.value;
    let prefix = '';
    let name = nameInput.value.trim();
    // A whole resource document is accepted too; the API takes its spec.
    if (body && typeof body === 'object' && !Array.isArray(body) && 'spec' in body && ('kind' in body || 'apiVersion' in body)) {
      if (body.kind && body.kind !== k.label) {
        editor.showFieldError(parsed.spans, 'kind', `this page applies ${k.label} resources`);
        return;
      }
      if (isNew && !name && body.metadata?.name) name = nameInput.value = String(body.metadata.name);
      body = body.spec;
      prefix = 'spec.';
    }
    if (!name) {
      nameError.hidden = false;
      replace(nameError, 'a name is required');
      nameInput.setAttribute('aria-invalid', 'true');
      return;
    }
    applyButton.disabled = true;
    try {
      const applied = await call('PUT', `/v1/${k.path}/${encodeURIComponent(name)}`, { body: JSON.stringify(body) });
      rememberVersion(kind, applied);
      flash = applied.changed
        ? `Applied ${k.label.toLowerCase()} ${applied.name}: version ${applied.version}.`
        : `No change: version ${applied.version} already has this spec.`;
      const target = route(k.path, applied.name);
      if (window.location.hash !== target) window.location.hash = target;
      else window.dispatchEvent(new HashChangeEvent('hashchange'));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const path = error.field ?? /^([A-Za-z0-9_.[\]]+): /.exec(error.message)?.[1] ?? null;
      const why = path && error.message.startsWith(`${path}: `) ? error.message.slice(path.length + 2) : error.message;
      if (path === 'name') {
        nameError.hidden = false;
        replace(nameError, why);
        nameInput.setAttribute('aria-invalid', 'true');
        replace(result, notice('error', h('strong', null, 'name'), `: ${why}`));
      } else if (path && path !== 'body') {
        const line = editor.showFieldError(parsed.spans, prefix + path, why);
        replace(
          result,
          notice('error', `Refused (${error.status}): `, h('code', null, prefix + path), `: ${why}`, line ? ` (line ${line})` : ''),
        );
      } else {
        replace(result, notice('error', `Refused (${error.status}): ${error.message}`));
      }
    } finally {
      applyButton.disabled = false;
    }
  }

  const form = h(
    'form',
    { class: 'apply-form', id: 'apply-form', onsubmit: apply },
    h('h2', null, isNew ? 'Name and spec' : 'Apply a new version'),
    field('Name', nameInput),
    nameError,
    h('p', { class: 'muted small' }, 'The spec as JSON, or a whole resource document (apiVersion, kind, metadata, spec).'),
    editor.el,
    h('div', { class: 'actions' }, applyButton, isNew ? null : h('button', { type: 'button', onclick: () => (editor.text = JSON.stringify(resource.spec, null, 2)) }, 'Reset')),
    result,
  );

  if (flash) {
    replace(result, notice('ok', flash));
    flash = null;
  }
  if (isNew) {
    replace(main, h('div', { class: 'title-row' }, h('h1', null, `New ${kind}`), link(`All ${k.title.toLowerCase()}`, k.path)), form);
    return;
  }
  const view = specView(kind, resource);
  replace(
    main,
    h(
      'div',
      { class: 'title-row' },
      h('h1', null, `${k.label} `, h('span', { class: 'name' }, resource.name), ' ', h('span', { class: 'badge', id: 'resource-version' }, `v${resource.version}`)),
      kind === 'agent' ? h('a', { class: 'button', href: route('tasks', { agent: resource.name }) }, 'Tasks') : null,
    ),
    h('p', { class: 'muted small' }, `created ${fmt.time(resource.createdAt)} · updated ${fmt.time(resource.updatedAt)}`),
    h(
      'div',
      { class: 'columns' },
      h('div', null, h('section', { class: 'panel' }, h('h2', null, 'Spec'), view.el), versionsPanel(kind, resource, tasks, history, stored)),
      h('section', { class: 'panel' }, form),
    ),
  );
}
