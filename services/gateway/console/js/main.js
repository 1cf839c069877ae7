// The console's shell: sign-in, navigation and the hash router. Each page
// renders into <main> and gets an AbortSignal that fires when the user
// navigates away (open streams and timers stop with it).

import { get, session } from './api.js';
import { field, h, notice, replace } from './dom.js';
import { agentList, resourcePage, toolList } from './resources.js';
import { taskList, taskPage } from './tasks.js';
import { traceList, tracePage } from './traces.js';
import { usagePage } from './usage.js';

const SECTIONS = [
  ['agents', 'Agents'],
  ['tools', 'Tools'],
  ['tasks', 'Tasks'],
  ['traces', 'Traces'],
  ['usage', 'Usage'],
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let current = null; // AbortController of the page on screen

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, '');
  const [path, search] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(search ?? '') };
}

function renderChrome(section) {
  const signedIn = Boolean(session.token());
  replace(
    nav,
    signedIn ? SECTIONS.map(([id, label]) => h('a', { href: `#/${id}`, class: id === section ? 'active' : null, 'aria-current': id === section ? 'page' : null }, label)) : null,
  );
  const claims = session.claims();
  replace(
    who,
    signedIn && claims?.tenant ? h('span', { class: 'muted small', id: 'who-tenant' }, `${claims.sub ?? ''} @ ${claims.tenant}`) : null,
    signedIn
      ? h(
          'button',
          {
            type: 'button',
            class: 'link-button',
            id: 'sign-out',
            onclick: () => {
              session.signOut();
              route();
            },
          },
          'Sign out',
        )
      : null,
  );
}

function login(message) {
  renderChrome(null);
  const token = h('textarea', { name: 'token', rows: 4, required: true, autocomplete: 'off', spellcheck: 'false', 'aria-label': 'Token' });
  const out = h('div', { 'aria-live': 'polite' }, message ? notice('error', message) : null);
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  replace(
    main,
    h(
      'form',
      {
        class: 'panel login',
        id: 'login',
        onsubmit: async (e) => {
          e.preventDefault();
          button.disabled = true;
          session.signIn(token.value.trim());
          try {
            // Any read proves the token: the viewer role is enough.
            await get('/v1/tasks', { limit: 1 });
            if (!window.location.hash || window.location.hash === '#/') window.location.hash = '#/tasks';
            route();
          } catch (error) {
            session.signOut();
            replace(out, notice('error', `Not signed in: ${error.message}`));
          } finally {
            button.disabled = false;
          }
        },
      },
      h('h1', null, 'Sign in'),
      h('p', { class: 'muted' }, 'Paste a token or an API key of your tenant. It stays in this tab only (session storage).'),
      field('Token or API key', token),
      h('div', { class: 'actions' }, button),
      out,
    ),
  );
  token.focus();
}

async function route() {
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  if (!session.token()) {
    login();
    return;
  }
  const { parts, query } = parseHash();
  const [section = 'tasks', id] = parts;
  renderChrome(section);
  const ctx = { query, signal, id, name: id };
  try {
    switch (section) {
      case 'agents':
        await (id ? resourcePage(main, { ...ctx, kind: 'agent' }) : agentList(main, ctx));
        break;
      case 'tools':
        await (id ? resourcePage(main, { ...ctx, kind: 'tool' }) : toolList(main, ctx));
        break;
      case 'tasks':
        await (id ? taskPage(main, ctx) : taskList(main, ctx));
        break;
      case 'traces':
        await (id ? tracePage(main, ctx) : traceList(main, ctx));
        break;
      case 'usage':
        await usagePage(main, ctx);
        break;
      default:
        replace(main, h('h1', null, 'Not found'), notice('error', `No page ${section}.`));
    }
  } catch (error) {
    if (error.name === 'AbortError') return;
    console.error(error);
    replace(main, h('h1', null, 'Something broke'), notice('error', String(error.message ?? error)));
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('console:unauthenticated', (e) => {
  current?.abort();
  session.signOut();
  login(`The gateway refused the token: ${e.detail.message}`);
});
route();
