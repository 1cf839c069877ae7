// The web console end to end in headless Chromium (Debian's `chromium`,
// driven by playwright-core; no browser download). Started by the
// integration test tests/integration/tests/mesh/console.rs against a mesh
// it runs in-process; every input comes from the environment:
//
//   CONSOLE_URL          the console, e.g. http://127.0.0.1:PORT/console/
//   CONSOLE_TOKEN        a token of the tenant (admin role: the audit log too)
//   CONSOLE_TENANT       that tenant
//   CONSOLE_OTLP_URL     the trace-collector's Langfuse-compatible OTLP/HTTP
//                        endpoint, with CONSOLE_OTLP_PUBLIC_KEY and
//                        CONSOLE_OTLP_SECRET_KEY: an ingestion key pair
//   CONSOLE_SCREENSHOTS  where the screenshots go (under the target dir)
//   CHROMIUM             the browser (default /usr/bin/chromium)
//
// The flow: sign in; apply an agent (first a bad one: the error shows at
// the field), run a task, approve its step, watch the final answer arrive,
// open its trace waterfall, open usage. Each page is screenshotted, and
// assertions are on what the page shows. Prints `TASK <id>` and
// `TRACE <id>` for the Rust side to check through the API.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const CONSOLE = env('CONSOLE_URL');
const TOKEN = env('CONSOLE_TOKEN');
const TENANT = env('CONSOLE_TENANT');
const OTLP = env('CONSOLE_OTLP_URL');
const OTLP_AUTH = `Basic ${Buffer.from(`${env('CONSOLE_OTLP_PUBLIC_KEY')}:${env('CONSOLE_OTLP_SECRET_KEY')}`).toString('base64')}`;
const SHOTS = env('CONSOLE_SCREENSHOTS');
const BROWSER = env('CHROMIUM', '/usr/bin/chromium');
const WAIT = 30_000;

mkdirSync(SHOTS, { recursive: true });

const SCRIPT = JSON.stringify([
  { tool_calls: [{ name: 'ask_human', arguments: { action: 'drop the staging table' } }] },
  { content: 'decision: {{tool_results}}' },
]);
const GOOD = {
  apiVersion: 'agentmesh.dev/v1alpha1',
  kind: 'Agent',
  metadata: { name: 'gated' },
  spec: {
    model: 'sim-model',
    systemPrompt: `You are a test agent.\n[[agentmesh-sim-script]]\n${SCRIPT}`,
    temperature: 0,
    tools: [
      {
        name: 'ask_human',
        spec: {
          type: 'human',
          description: 'may I run this action?',
          parameters: { type: 'object', properties: { action: { type: 'string' } }, required: ['action'] },
          config: { timeout: '1h' },
        },
      },
    ],
  },
};
// The same agent with a memory that keeps no history: refused, naming
// `memory.maxHistory` (under `spec.` in a whole document).
const BAD = structuredClone(GOOD);
BAD.spec.memory = { type: 'redis', ttl: '1h', maxHistory: 0 };

const browser = await chromium.launch({
  executablePath: BROWSER,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
const page = await context.newPage();
const problems = [];
page.on('console', (m) => {
  // HTTP errors the flow provokes on purpose (401, 400) are logged by the
  // browser as "Failed to load resource"; anything else is a defect.
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console error: ${m.text()}`);
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.setDefaultTimeout(WAIT);

const shot = (name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
const go = async (hash) => {
  await page.evaluate((h) => {
    window.location.hash = h;
  }, hash);
};
const text = (selector) => page.locator(selector).first().innerText();

try {
  // --- sign in ---
  const response = await page.goto(CONSOLE);
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-security-policy'] ?? '', /script-src 'self'/);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  // A wrong token is refused with the gateway's reason.
  await page.getByLabel('Token', { exact: true }).fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('.notice.error').waitFor();
  assert.match(await text('.notice.error'), /refused|not signed in/i);
  await page.getByLabel('Token', { exact: true }).fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Tasks' }).waitFor();
  assert.match(await text('#who'), new RegExp(TENANT));

  // --- apply an agent: the bad one first ---
  await go('#/agents/new');
  await page.getByRole('heading', { name: 'New agent', level: 1 }).waitFor();
  const editor = page.getByLabel('Agent spec (JSON)');
  const badText = JSON.stringify(BAD, null, 2);
  await editor.fill(badText);
  await page.getByRole('button', { name: 'Create agent' }).click();
  const bubble = page.locator('.field-error-bubble');
  await bubble.waitFor({ state: 'visible' });
  assert.match(await bubble.innerText(), /spec\.memory\.maxHistory/);
  const expectedLine = badText.split('\n').findIndex((l) => l.includes('"maxHistory"')) + 1;
  assert.equal(await text('.editor-gutter .marked'), String(expectedLine), 'the marked line is the field\'s');
  assert.match(await text('mark.error-line'), /maxHistory/);
  assert.match(await text('.apply-result .notice.error'), /Refused \(400\).*spec\.memory\.maxHistory/s);
  await shot('agent-error');

  // Malformed JSON is caught before it is sent, at its line.
  await editor.fill('{\n  "model": "sim-model",\n  "temperature": ,\n}');
  await page.getByRole('button', { name: 'Create agent' }).click();
  await bubble.waitFor({ state: 'visible' });
  assert.match(await bubble.innerText(), /line 3/);
  assert.equal(await text('.editor-gutter .marked'), '3');

  // --- the good one ---
  await editor.fill(JSON.stringify(GOOD, null, 2));
  await page.getByRole('button', { name: 'Create agent' }).click();
  await page.locator('#resource-version').waitFor();
  assert.equal(await text('#resource-version'), 'v1');
  assert.match(await text('.apply-result .notice.ok'), /version 1/);
  const yaml = await text('#spec-view');
  assert.match(yaml, /^kind: Agent$/m);
  assert.match(yaml, /name: ask_human/);
  await page.getByRole('button', { name: 'JSON', exact: true }).click();
  assert.match(await text('#spec-view'), /"apiVersion": "agentmesh.dev\/v1alpha1"/);
  assert.match(await text('#versions'), /v1\s*current/);

  // A second version: both listed, with who applied them (the audit log).
  const v2 = structuredClone(GOOD);
  v2.spec.temperature = 0.5;
  await page.getByLabel('Agent spec (JSON)').fill(JSON.stringify(v2, null, 2));
  await page.getByRole('button', { name: 'Apply new version' }).click();
  await page.locator('#resource-version', { hasText: 'v2' }).waitFor();
  assert.match(await text('.apply-result .notice.ok'), /version 2/);
  const versions = await text('#versions');
  assert.match(versions, /v2\s*current[^\n]*\btest\b/);
  assert.match(versions, /v1[^\n]*\btest\b[^\n]*view/);
  await shot('agent');

  await go('#/agents');
  await page.locator('#agents-table').waitFor();
  assert.match(await text('#agents-table'), /gated\s+v2\s+sim-model/);
  await shot('agents');

  // --- run a task ---
  await go('#/tasks');
  await page.locator('#run-form').waitFor();
  const run = page.locator('#run-form');
  await run.getByLabel('Agent').fill('gated');
  await run.getByLabel('Input').fill('clean up the staging table');
  await run.getByRole('button', { name: 'Run task' }).click();
  await page.waitForURL(/#\/tasks\/[0-9a-f-]{36}$/);
  const taskId = page.url().split('/').pop();

  // The approval arrives over the event stream; decide it in the page.
  const approve = page.getByRole('button', { name: 'Approve' });
  await approve.waitFor();
  assert.match(await text('#approval'), /ask_human/);
  assert.match(await text('#approval'), /drop the staging table/);
  assert.match(await text('#task-status'), /awaiting approval/);
  assert.match(await text('#timeline'), /approval requested/);
  await shot('task-approval');
  await page.getByLabel('Comment').fill('go ahead');
  await approve.click();

  // The final answer arrives live.
  await page.locator('#final-answer h2', { hasText: 'Final answer' }).waitFor();
  const answer = await text('#final-answer');
  assert.match(answer, /Final answer/);
  assert.match(answer, /"approved":\s*true/);
  assert.match(answer, /go ahead/);
  assert.match(await text('#task-status'), /succeeded/);
  const timeline = await text('#timeline');
  for (const step of ['started', 'model', 'approval requested', 'approved', 'completed']) {
    assert.ok(timeline.includes(step), `timeline shows ${step}: ${timeline}`);
  }
  assert.equal(await page.locator('#cancel-task').count(), 0, 'no cancel on a finished task');
  await page.locator('#stream-state', { hasText: 'ended' }).waitFor();
  await shot('task');

  // --- the task's trace ---
  const traceHref = await page.locator('#open-trace').getAttribute('href');
  const traceId = traceHref.split('/').pop();
  assert.match(traceId, /^[0-9a-f]{32}$/);
  // Spans of the task under the trace id the console sent as traceparent
  // (the in-process mesh exports none of its own per tenant), shaped as
  // the worker emits them: agent, two generations, the human tool, and a
  // failed lookup to show an error.
  await exportTrace(traceId);

  await go('#/tasks');
  await page.locator(`tr[data-task="${taskId}"]`).waitFor();
  assert.match(await text(`tr[data-task="${taskId}"]`), /gated[\s\S]*succeeded/);
  await shot('tasks');

  await go(traceHref);
  // The collector writes spans asynchronously: reload until they are in.
  for (let i = 0; ; i++) {
    if ((await page.locator('#waterfall').count()) > 0 && (await page.locator('#waterfall .wf-row[data-span]').count()) === 5) break;
    assert.ok(i < 40, 'the trace never appeared');
    await page.waitForTimeout(500);
    await page.evaluate(() => window.dispatchEvent(new HashChangeEvent('hashchange')));
    await page.waitForTimeout(200);
  }
  const rows = page.locator('#waterfall .wf-row[data-span]');
  assert.equal(await rows.count(), 5);
  assert.match(await rows.nth(0).innerText(), /agent\s+invoke_agent gated/);
  const errorRow = page.locator('#waterfall .wf-row.error');
  assert.equal(await errorRow.count(), 1);
  assert.match(await errorRow.innerText(), /execute_tool lookup/);
  // The first error is selected on arrival, with its message.
  assert.match(await text('#observation-detail'), /Error: upstream answered 503/);
  assert.match(await text('.cards'), /Errors\s*1\s/i);
  assert.match(await text('.cards'), /\$0\.0000|\$0\.000/);
  // A generation: tokens, cost and what went in and out.
  await page.locator('#waterfall .wf-row[data-type="generation"]').first().click();
  const detail = await text('#observation-detail');
  assert.match(detail, /gpt-4o-mini/);
  assert.match(detail, /1200 in \/ 80 out/);
  assert.match(detail, /Input[\s\S]*clean up the staging table/);
  assert.match(detail, /Output[\s\S]*ask_human/);
  // Nesting: collapsing the agent hides its children.
  await page.locator('#waterfall .wf-row[data-span] .toggle').first().click();
  assert.equal(await page.locator('#waterfall .wf-row[data-span]').count(), 1);
  await page.locator('#waterfall .wf-row[data-span] .toggle').first().click();
  assert.equal(await page.locator('#waterfall .wf-row[data-span]').count(), 5);
  await page.locator('#waterfall .wf-row[data-type="generation"]').first().click();
  await shot('trace');

  await go('#/traces?agent=gated');
  await page.locator('#trace-table table').waitFor();
  assert.match(await text('#trace-table'), /invoke_agent gated/);
  await shot('traces');

  // --- usage ---
  await go('#/usage?by=model&range=1h');
  await page.locator('#usage-totals').waitFor();
  const totals = await text('#usage-totals');
  assert.match(totals, /gpt-4o-mini\s+2\s+0\s+0\.0%\s+1\.5k|gpt-4o-mini\s+2\s+0\s+0\.0%\s+1500/);
  for (const chart of ['#chart-tokens', '#chart-cost', '#chart-latency', '#chart-errors']) {
    assert.ok((await page.locator(`${chart} circle`).count()) >= 1, `${chart} has points`);
  }
  await shot('usage-models');
  await go('#/usage?by=agent&range=1h');
  await page.locator('#usage-totals', { hasText: 'gated' }).waitFor();
  assert.match(await text('#usage-totals'), /gated\s+1\s+1\s+100%/);
  await shot('usage');

  // --- cancel a task while it waits for approval ---
  await go('#/tasks');
  await run.getByLabel('Agent').fill('gated');
  await run.getByLabel('Input').fill('never mind');
  await run.getByRole('button', { name: 'Run task' }).click();
  await page.waitForURL((url) => /#\/tasks\/[0-9a-f-]{36}$/.test(url.hash) && !url.hash.endsWith(taskId));
  await page.getByRole('button', { name: 'Approve' }).waitFor();
  await page.locator('#cancel-task').click();
  await page.locator('#task-status [data-status="cancelled"]').waitFor();
  assert.match(await text('#timeline'), /cancelled/);
  assert.equal(await page.getByRole('button', { name: 'Approve' }).count(), 0, 'no approval left to decide');

  // --- task filters ---
  await go('#/tasks?agent=gated&status=cancelled');
  await page.locator('#task-table table').waitFor();
  assert.equal(await page.locator('#task-table tbody tr').count(), 1);
  assert.match(await text('#task-table tbody'), /never mind/);
  await go('#/tasks?status=failed');
  await page.locator('#task-table .notice', { hasText: 'No tasks match.' }).waitFor();

  // --- tools ---
  await go('#/tools/new');
  await page.getByLabel('Tool name').fill('search');
  await page.getByRole('button', { name: 'Create tool' }).click();
  await page.locator('#resource-version').waitFor();
  assert.equal(await text('#resource-version'), 'v1');
  await go('#/tools');
  await page.locator('#tools-table').waitFor();
  assert.match(await text('#tools-table'), /search\s+api\s+v1/);
  await shot('tools');

  assert.deepEqual(problems, [], 'no script errors in the page');
  console.log(`TASK ${taskId}`);
  console.log(`TRACE ${traceId}`);
  console.log('console e2e: 1 passed, 0 failed');
} catch (error) {
  await shot('failure').catch(() => {});
  console.error(`page problems: ${JSON.stringify(problems)}`);
  throw error;
} finally {
  await browser.close();
}

async function exportTrace(traceId) {
  const ms = 1_000_000n;
  const t0 = BigInt(Date.now() - 4000) * ms;
  const at = (offset) => String(t0 + BigInt(offset) * ms);
  const str = (key, value) => ({ key, value: { stringValue: value } });
  const int = (key, value) => ({ key, value: { intValue: String(value) } });
  const root = '1000000000000001';
  const span = (spanId, parent, name, from, to, attributes, status = {}) => ({
    traceId,
    spanId,
    parentSpanId: parent,
    name,
    kind: 1,
    startTimeUnixNano: at(from),
    endTimeUnixNano: at(to),
    attributes,
    status,
  });
  const body = {
    resourceSpans: [
      {
        resource: { attributes: [str('service.name', 'agent-worker')] },
        scopeSpans: [
          {
            scope: { name: 'agentmesh' },
            spans: [
              span(root, '', 'invoke_agent gated', 0, 3200, [str('gen_ai.operation.name', 'invoke_agent'), str('gen_ai.agent.name', 'gated')]),
              span('1000000000000002', root, 'chat gpt-4o-mini', 40, 900, [
                str('gen_ai.operation.name', 'chat'),
                str('gen_ai.request.model', 'gpt-4o-mini'),
                int('gen_ai.usage.input_tokens', 1200),
                int('gen_ai.usage.output_tokens', 80),
                str('gen_ai.prompt', 'clean up the staging table'),
                str('gen_ai.completion', '{"tool_calls":[{"name":"ask_human"}]}'),
              ]),
              span('1000000000000003', root, 'execute_tool ask_human', 950, 2300, [str('gen_ai.operation.name', 'execute_tool'), str('gen_ai.tool.name', 'ask_human')]),
              span(
                '1000000000000004',
                root,
                'execute_tool lookup',
                2320,
                2500,
                [str('gen_ai.operation.name', 'execute_tool'), str('gen_ai.tool.name', 'lookup')],
                { code: 2, message: 'upstream answered 503' },
              ),
              span('1000000000000005', root, 'chat gpt-4o-mini', 2550, 3150, [
                str('gen_ai.operation.name', 'chat'),
                str('gen_ai.request.model', 'gpt-4o-mini'),
                int('gen_ai.usage.input_tokens', 180),
                int('gen_ai.usage.output_tokens', 40),
              ]),
            ],
          },
        ],
      },
    ],
  };
  const res = await fetch(OTLP, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: OTLP_AUTH },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, `OTLP export: ${res.status} ${await res.text()}`);
}
