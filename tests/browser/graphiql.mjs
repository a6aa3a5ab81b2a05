// Headless Chromium test of the GraphiQL page at /graphiql.
//
//   node graphiql.mjs http://127.0.0.1:PORT
//
// The page loads graphiql, react and react-dom from the server's
// /graphiql/assets (built into its binary); any request to another host is
// aborted and fails the test.
//
// Check 1: the README's first GraphiQL query (the first ```graphql block:
// the RUNNING runs of the demo that run.sh loads with `scenario-hub demo`),
// pasted into the editor and run with the execute button, shows the demo run
// with its engines and events in the result pane.
// Check 2: a subscription run from the page (events with afterSequence: 0 on
// a run made RUNNING over HTTP) shows the replayed run_status_changed event,
// then a live one pushed after another status change, in the result pane,
// over the page's websocket (graphql-transport-ws).
//
// Check 3: the run viewer of the demo run: its engines, events, chart,
// relationship graph and evaluation; a fork appears in its fork tree; a new
// event appears without a reload; an engine that goes away turns offline.
// Check 4: once the server has keys (made here with the CLI, on the
// database run.sh gives in DATABASE_URL), the viewer asks for a token,
// refuses a wrong one, and with a viewer key shows the runs and a run live.
//
// Exits 0 when all pass; otherwise non-zero, with a screenshot under
// target/browser/ (and target/browser/viewer.png of the viewer either way).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const shotDir = path.join(repo, 'target', 'browser');
const base = (process.argv[2] || '').replace(/\/+$/, '');
if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\]):\d+$/.test(base)) {
  console.error('usage: node graphiql.mjs http://127.0.0.1:PORT');
  process.exit(2);
}
const STEP_MS = 20_000;
const TOTAL_MS = 120_000;
const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

const log = (...args) => console.log('[graphiql]', ...args);

/** The README's first ```graphql block, trimmed. */
function readmeFirstQuery() {
  const readme = fs.readFileSync(path.join(repo, 'README.md'), 'utf8');
  const block = readme.match(/```graphql\r?\n([\s\S]*?)```/);
  if (!block) throw new Error('README.md has no ```graphql block');
  return block[1].trim();
}

let setupToken = null; // the admin key the setup requests use once keys exist

/** A GraphQL request over HTTP from the test itself (setup, not under test). */
async function gql(query) {
  const headers = { 'content-type': 'application/json' };
  if (setupToken) headers.authorization = `Bearer ${setupToken}`;
  const response = await fetch(`${base}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query }) });
  const body = await response.json();
  if (!response.ok || body.errors) {
    throw new Error(`setup request failed (${response.status}): ${JSON.stringify(body)}`);
  }
  return body.data;
}

const offHost = []; // requests to hosts other than this machine
const pageErrors = []; // uncaught exceptions in the page
const consoleErrors = [];
const wsFrames = []; // {dir, url, text}
let page;
let context;
let userDataDir;
let passed = 0;
let failed = 0;

/** Text of a CodeMirror editor inside `selector`, as its instance holds it. */
async function editorValue(selector) {
  return page.$eval(`${selector} .CodeMirror`, (el) =>
    el.CodeMirror ? el.CodeMirror.getValue() : el.innerText,
  );
}

/** What the result pane shows (the lines CodeMirror has rendered). */
async function resultPaneText() {
  return page.$eval('.graphiql-response .CodeMirror-code', (el) => el.innerText).catch(() => '');
}

/** Replaces the query editor's text as a paste would, and checks it took. */
async function pasteQuery(query) {
  await page.click('.graphiql-query-editor .CodeMirror-lines');
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(query);
  const got = await editorValue('.graphiql-query-editor');
  if (got.trim() !== query.trim()) {
    throw new Error(`query editor holds ${JSON.stringify(got)}, not ${JSON.stringify(query)}`);
  }
  // GraphiQL parses the editor 100 ms after a change (a debounce) and picks
  // the transport from that parse: a click before it sends the previous
  // document's kind, e.g. a subscription over HTTP. Wait for the parse of
  // this text, as a person's pause before clicking would.
  await page.waitForFunction(
    () => {
      const cm = document.querySelector('.graphiql-query-editor .CodeMirror')?.CodeMirror;
      return cm?.documentAST?.loc?.source?.body === cm?.getValue();
    },
    null,
    { timeout: STEP_MS, polling: 50 },
  );
}

/** Waits until the result pane's text satisfies `test` (a RegExp); returns it. */
async function waitForResult(test, what) {
  const deadline = Date.now() + STEP_MS;
  let text = '';
  while (Date.now() < deadline) {
    text = await resultPaneText();
    if (test.test(text)) return text;
    await page.waitForTimeout(100);
  }
  throw new Error(`result pane never showed ${what}; it shows:\n${text}`);
}

async function checkReadmeQuery() {
  const query = readmeFirstQuery();
  if (!/scenarioRuns/.test(query)) {
    throw new Error(`README's first graphql block is not the demo's scenarioRuns query:\n${query}`);
  }
  log('README query:', query);
  await pasteQuery(query);
  const execute = page.locator('.graphiql-execute-button');
  log('execute button:', await execute.getAttribute('aria-label'));
  await execute.click();
  const text = await waitForResult(/"market day, first light"/, 'the demo run');
  const value = JSON.parse(await editorValue('.graphiql-response'));
  const run = value?.data?.scenarioRuns?.nodes?.[0];
  if (value.errors || run?.status !== 'RUNNING' || run.engines?.length !== 5 || !run.events?.nodes?.length) {
    throw new Error(`unexpected result: ${JSON.stringify(value)}`);
  }
  log('result pane shows:', text.replace(/\s+/g, ' ').slice(0, 300), '...');
  return run.name;
}

async function checkSubscription() {
  // A run with one event (run_status_changed, sequence 1), made over HTTP.
  const tpl = await gql(
    `mutation { createScenarioTemplate(input: {name: "browser test ${Date.now()}", config: {}}) { id } }`,
  );
  const run = await gql(
    `mutation { createScenarioRun(input: {templateId: "${tpl.createScenarioTemplate.id}", name: "browser run"}) { id } }`,
  );
  const runId = run.createScenarioRun.id;
  await gql(`mutation { setRunStatus(runId: "${runId}", status: RUNNING) { status } }`);
  log('run over HTTP:', runId, 'RUNNING');

  const subscription = `subscription { events(runId: "${runId}", afterSequence: 0) { sequence eventType payload } }`;
  await pasteQuery(subscription);
  const framesBefore = wsFrames.length;
  await page.locator('.graphiql-execute-button').click();

  // The replay: sequence 1, RUNNING.
  const replayed = await waitForResult(
    /"events"[\s\S]*"sequence"\s*:\s*1\b[\s\S]*"run_status_changed"[\s\S]*RUNNING/,
    'the replayed run_status_changed event (sequence 1)',
  );
  log('result pane shows (replay):', replayed.replace(/\s+/g, ' '));
  const label = await page.locator('.graphiql-execute-button').getAttribute('aria-label');
  log('execute button while subscribed:', label);

  // A live event, pushed over the websocket after it opened.
  await gql(`mutation { setRunStatus(runId: "${runId}", status: PAUSED) { status } }`);
  const live = await waitForResult(
    /"events"[\s\S]*"sequence"\s*:\s*2\b[\s\S]*"run_status_changed"[\s\S]*PAUSED/,
    'the live run_status_changed event (sequence 2)',
  );
  log('result pane shows (live):', live.replace(/\s+/g, ' '));

  const frames = wsFrames.slice(framesBefore);
  const types = frames.map((f) => `${f.dir}:${(f.text.match(/"type"\s*:\s*"([^"]+)"/) || [])[1] || '?'}`);
  log('websocket', [...new Set(frames.map((f) => f.url))].join(' '), 'frames:', types.join(' '));
  const wsUrl = `${base.replace(/^http/, 'ws')}/graphql`;
  if (!frames.some((f) => f.url === wsUrl && f.dir === 'recv' && /"type"\s*:\s*"next"/.test(f.text))) {
    throw new Error(`no "next" message arrived on ${wsUrl}`);
  }

  // Close the run: the stream completes and the button goes back to "run".
  const framesLive = wsFrames.length;
  await gql(`mutation { setRunStatus(runId: "${runId}", status: COMPLETED) { status } }`);
  await page
    .waitForFunction(
      (before) =>
        document.querySelector('.graphiql-execute-button')?.getAttribute('aria-label') !== before,
      label,
      { timeout: STEP_MS },
    )
    .then(
      async () => {
        const after = wsFrames.slice(framesLive).map((f) => `${f.dir}:${(f.text.match(/"type"\s*:\s*"([^"]+)"/) || [])[1] || '?'}`);
        log('after COMPLETED, frames:', after.join(' '), '- execute button:',
          await page.locator('.graphiql-execute-button').getAttribute('aria-label'));
      },
      () => log('after COMPLETED, the execute button still reads', JSON.stringify(label)),
    );
}

async function screenshot(name) {
  if (!page) return;
  fs.mkdirSync(shotDir, { recursive: true });
  const file = path.join(shotDir, name);
  await page.screenshot({ path: file, fullPage: true }).catch((e) => log('screenshot failed:', e.message));
  log('screenshot:', path.relative(process.cwd(), file) || file);
}

async function main() {
  // Screenshots of an earlier run would mislead.
  for (const old of fs.existsSync(shotDir) ? fs.readdirSync(shotDir) : []) {
    if (/^graphiql-.*\.png$/.test(old)) fs.rmSync(path.join(shotDir, old));
  }
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'graphiql-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  // Nothing leaves this machine: a request to another host is aborted and
  // fails the test.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (/^(https?|wss?):$/.test(url.protocol) && !LOCAL_HOSTS.has(url.hostname)) {
      offHost.push(url.href);
      return route.abort('blockedbyclient');
    }
    return route.continue();
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(`${m.text()} ${m.location()?.url || ''}`.trim());
  });
  page.on('websocket', (ws) => {
    const host = new URL(ws.url()).hostname;
    if (!LOCAL_HOSTS.has(host)) offHost.push(ws.url());
    ws.on('framesent', (f) => wsFrames.push({ dir: 'sent', url: ws.url(), text: String(f.payload) }));
    ws.on('framereceived', (f) => wsFrames.push({ dir: 'recv', url: ws.url(), text: String(f.payload) }));
  });

  log('open', `${base}/graphiql`);
  const response = await page.goto(`${base}/graphiql`, { waitUntil: 'load', timeout: STEP_MS });
  if (!response || response.status() !== 200) throw new Error(`GET /graphiql: ${response?.status()}`);
  await page.waitForSelector('.graphiql-query-editor .CodeMirror', { timeout: STEP_MS });
  await page.waitForSelector('.graphiql-execute-button', { timeout: STEP_MS });
  const version = await page.evaluate(() => `react ${window.React?.version}`);
  log(`editor ready (built-in scripts, ${version})`);

  const checks = [
    ['README query in GraphiQL', checkReadmeQuery],
    ['subscription over the page websocket', checkSubscription],
    ['run viewer: the demo run, live', checkViewer],
    ['run viewer: token prompt once keys exist', checkTokenPrompt],
  ];
  for (const [name, check] of checks) {
    try {
      await check();
      if (offHost.length) throw new Error(`requests to other hosts: ${offHost.join(' ')}`);
      if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join(' | ')}`);
      passed += 1;
      log(`PASS ${name}`);
    } catch (e) {
      failed += 1;
      log(`FAIL ${name}: ${e.stack || e}`);
      await screenshot(`graphiql-failure-${passed + failed}.png`);
    }
  }
  if (!failed) await screenshot('graphiql-ok.png');
  if (consoleErrors.length) log('console errors (not failures):', consoleErrors.join(' | '));
}

/**
 * The run viewer: /runs lists the demo run; its page shows the demo's
 * engines, events (table and chart) and evaluation; an event published
 * afterwards appears without a reload.
 */
async function checkViewer() {
  await page.goto(`${base}/runs`, { waitUntil: 'load', timeout: STEP_MS });
  const link = await page.waitForSelector('#runs a', { timeout: STEP_MS });
  const name = await link.innerText();
  if (name !== 'market day, first light') throw new Error(`the run list shows ${name}`);
  await link.click();
  await page.waitForSelector('#engine-table tbody tr', { timeout: STEP_MS });
  const engines = await page.$$eval('#engine-table tbody tr', (rows) => rows.length);
  if (engines !== 5) throw new Error(`${engines} engines shown, the demo has 5`);
  await page.waitForSelector('#event-table tbody tr', { timeout: STEP_MS });
  const shown = await page.$eval('#events h2', (h) => h.textContent);
  if (!/Events \(37,/.test(shown)) throw new Error(`events heading: ${shown}`);
  const evaluation = await page.$eval('#evaluation', (e) => e.textContent);
  if (evaluation !== 'PASSED') throw new Error(`evaluation shows ${evaluation}`);
  const canvas = await page.$eval('#timeline', (c) => [c.width, c.height]);
  if (!(canvas[0] > 100 && canvas[1] > 100)) throw new Error(`timeline chart ${canvas}`);
  log('viewer shows', engines, 'engines,', shown, 'evaluation', evaluation);

  // The relationship graph: a drawn chart, and one line per relationship.
  const run = page.url().split('/').pop();
  const { scenarioRun } = await gql(`{ scenarioRun(id: "${run}") { relationships { kind } } }`);
  const relationships = scenarioRun.relationships.length;
  if (!relationships) throw new Error('the demo run has no relationships');
  await page.waitForSelector('#relationship-graph', { timeout: STEP_MS });
  const graph = await page.$eval('#relationship-graph', (c) => [c.width, c.height]);
  if (!(graph[0] > 100 && graph[1] > 100)) throw new Error(`relationship graph ${graph}`);
  const listed = await page.$$eval('#relationship-list li', (items) => items.length);
  if (listed !== relationships) throw new Error(`${listed} relationships listed, the run has ${relationships}`);
  log(`viewer draws the relationship graph (${relationships} relationships)`);

  // The fork tree: a fork made now shows under the run without a reload
  // (the run is drawn again every few seconds), and links to its own page.
  const fork = await gql(`mutation { forkRun(input: {runId: "${run}", atSequence: 10, name: "viewer fork"}) { id } }`);
  const forkLink = await page.waitForSelector(`#lineage a[href="/runs/${fork.forkRun.id}"]`, { timeout: STEP_MS });
  if ((await forkLink.innerText()) !== 'viewer fork') throw new Error('the fork link is not named after the fork');
  log('viewer shows the fork in its fork tree');

  // Live: a new event appears without a reload.
  const published = await gql(`mutation { publishEvent(input: {runId: "${run}", eventType: "scene_set",
    priority: 9, payload: {text: "The viewer watches.", role: "narrator"}}) { sequence } }`);
  const sequence = published.publishEvent.sequence;
  await page.waitForSelector(`#event-table tr[data-sequence="${sequence}"]`, { timeout: STEP_MS });
  await page.waitForFunction((n) => document.querySelector('#last-sequence')?.textContent === String(n), sequence, { timeout: STEP_MS });
  log(`viewer shows event ${sequence} live`);

  // An engine that subscribes shows online; once its websocket closes it
  // turns offline, without a reload.
  const engineId = crypto.randomUUID();
  await gql(`mutation { registerEngine(input: {runId: "${run}", engineId: "${engineId}",
    engineType: "ViewerProbe"}) { engineId } }`);
  const probe = await context.newPage();
  await probe.goto(`${base}/healthz`);
  await probe.evaluate(
    ({ engineId, run }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
        window.probe = ws;
        ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init' }));
        ws.onerror = () => reject(new Error('probe websocket failed'));
        ws.onmessage = (m) => {
          if (JSON.parse(m.data).type !== 'connection_ack') return;
          const query = `subscription { events(runId: "${run}", engineId: "${engineId}") { id } }`;
          ws.send(JSON.stringify({ id: 'probe', type: 'subscribe', payload: { query } }));
          resolve();
        };
      }),
    { engineId, run },
  );
  await page.waitForSelector(`tr[data-engine="${engineId}"] td.online`, { timeout: STEP_MS });
  await screenshot('viewer.png');
  await probe.evaluate(() => window.probe.close());
  await probe.close();
  await page.waitForSelector(`tr[data-engine="${engineId}"] td.offline`, { timeout: STEP_MS });
  log(`engine ${engineId} shown online while subscribed, offline once gone`);
}

/**
 * With keys, the viewer asks for a token: a wrong one is refused (asked
 * again), a viewer key shows the runs, and the run page is live over the
 * websocket with that key.
 */
async function checkTokenPrompt() {
  const bin = process.env.SCENARIO_HUB_BIN;
  if (!bin || !process.env.DATABASE_URL) throw new Error('run.sh sets SCENARIO_HUB_BIN and DATABASE_URL');
  const key = (role) =>
    execFileSync(bin, ['keys', 'create', '--role', role, '--name', `browser-${role}`], { encoding: 'utf8' })
      .trim().split('\n').pop();
  const viewerKey = key('viewer');
  setupToken = key('admin');
  // The server notices new keys within a second: wait until it refuses an
  // anonymous request.
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    const anonymous = await fetch(`${base}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ __typename }"}' });
    if (anonymous.status === 401) break;
    if (Date.now() > deadline) throw new Error('the server still answers without a key');
    await page.waitForTimeout(100);
  }

  const submit = async (token) => {
    await page.fill('#token-input', token);
    await Promise.all([page.waitForNavigation({ timeout: STEP_MS }), page.click('#token-form button')]);
  };
  await page.goto(`${base}/runs`, { waitUntil: 'load', timeout: STEP_MS });
  await page.waitForSelector('#token-form', { timeout: STEP_MS });
  await submit('not-a-key');
  await page.waitForSelector('#token-form', { timeout: STEP_MS });
  log('viewer asks for a token, and again after a wrong one');
  await submit(viewerKey);
  const link = await page.waitForSelector('#runs a', { timeout: STEP_MS });
  await link.click();
  await page.waitForSelector('#engine-table tbody tr', { timeout: STEP_MS });
  const run = page.url().split('/').pop();
  const published = await gql(`mutation { publishEvent(input: {runId: "${run}", eventType: "scene_set",
    priority: 9, payload: {text: "Only key holders watch.", role: "narrator"}}) { sequence } }`);
  await page.waitForSelector(`#event-table tr[data-sequence="${published.publishEvent.sequence}"]`, { timeout: STEP_MS });
  log('with a viewer key the viewer shows the runs, and a run live over the websocket');
}

const watchdog = setTimeout(async () => {
  log(`FAIL: gave up after ${TOTAL_MS / 1000} s`);
  await screenshot('graphiql-timeout.png');
  console.log('browser: 0 passed, 1 failed');
  process.exit(1);
}, TOTAL_MS);

try {
  await main();
} catch (e) {
  failed += 1;
  log(`FAIL: ${e.stack || e}`);
  if (offHost.length) log('requests to other hosts (blocked):', offHost.join(' '));
  if (pageErrors.length) log('page errors:', pageErrors.join(' | '));
  if (consoleErrors.length) log('console errors:', consoleErrors.join(' | '));
  await screenshot('graphiql-failure.png');
} finally {
  clearTimeout(watchdog);
  await context?.close().catch(() => {});
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
