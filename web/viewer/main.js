// The run viewer: /runs lists the runs, /runs/{id} shows one live. It reads
// through /graphql (queries over HTTP, subscriptions over the websocket with
// graphql-ws); when the server has keys it asks for a token (any role) once
// and keeps it in this browser's localStorage.
import { Chart, Legend, LinearScale, PointElement, ScatterController, Tooltip } from 'chart.js';
import { EdgeLine, ForceDirectedGraphController } from 'chartjs-chart-graph';
import { createClient } from 'graphql-ws';

Chart.register(ScatterController, LinearScale, PointElement, Tooltip, Legend, ForceDirectedGraphController, EdgeLine);

const TOKEN_KEY = 'scenario-hub-token';
const app = document.getElementById('app');

function token() {
  return localStorage.getItem(TOKEN_KEY);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

class NeedsToken extends Error {}

async function gql(query, variables = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token()) headers.authorization = `Bearer ${token()}`;
  const response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  const body = await response.json().catch(() => ({}));
  const code = body.errors?.[0]?.extensions?.code;
  if (response.status === 401 || code === 'UNAUTHENTICATED') throw new NeedsToken();
  if (body.errors) throw new Error(`${code ?? 'ERROR'}: ${body.errors[0].message}`);
  return body.data;
}

function askForToken() {
  app.replaceChildren(
    el('h1', { text: 'scenario-hub' }),
    el('p', { text: 'This server has API keys: give a token (any role) to read its runs.' }),
  );
  const input = el('input', { type: 'password', id: 'token-input', placeholder: 'token', size: '48' });
  const form = el('form', { id: 'token-form' }, input, el('button', { type: 'submit', text: 'Use token' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    localStorage.setItem(TOKEN_KEY, input.value.trim());
    location.reload();
  });
  app.append(form);
}

function failed(err) {
  if (err instanceof NeedsToken) return askForToken();
  app.append(el('p', { class: 'error', id: 'error', text: String(err.message ?? err) }));
}

const COLORS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

// Writes each node's label beside it (the graph chart draws points only).
const nodeLabels = {
  id: 'nodeLabels',
  afterDatasetsDraw(chart) {
    const { ctx } = chart;
    ctx.save();
    ctx.font = '12px system-ui, sans-serif';
    ctx.fillStyle = '#222';
    ctx.textAlign = 'center';
    chart.getDatasetMeta(0).data.forEach((point, i) => ctx.fillText(chart.data.labels[i], point.x, point.y - 10));
    ctx.restore();
  },
};

// The relationship graph: roles as nodes, each relationship an arrow from
// source to target, coloured by kind and as thick as its strength. Drawn
// again only when the relationships change (the layout is a simulation).
function relationshipGraph(section) {
  let chart = null;
  let drawn = null;
  return (relationships) => {
    const key = JSON.stringify(relationships);
    if (key === drawn) return;
    drawn = key;
    chart?.destroy();
    chart = null;
    const kinds = [...new Set(relationships.map((r) => r.kind))].sort();
    const colour = (kind) => COLORS[kinds.indexOf(kind) % COLORS.length];
    const list = el('ul', { id: 'relationship-list' }, ...relationships.map((r) => el('li', {},
      el('span', { class: 'swatch', style: `background:${colour(r.kind)}` }),
      `${r.sourceRole} → ${r.targetRole}: ${r.kind} (${r.strength})`)));
    if (!relationships.length) {
      section.replaceChildren(el('h2', { text: 'Relationships' }), el('p', { text: 'none' }));
      return;
    }
    const canvas = el('canvas', { id: 'relationship-graph' });
    section.replaceChildren(el('h2', { text: 'Relationships' }), el('div', { class: 'graph' }, canvas), list);
    const roles = [...new Set(relationships.flatMap((r) => [r.sourceRole, r.targetRole]))].sort();
    chart = new Chart(canvas, {
      type: 'forceDirectedGraph',
      data: {
        labels: roles,
        datasets: [{
          data: roles.map(() => ({})),
          edges: relationships.map((r) => ({ source: roles.indexOf(r.sourceRole), target: roles.indexOf(r.targetRole), ...r })),
          pointRadius: 6,
          pointBackgroundColor: '#555',
          directed: true,
          arrowHeadSize: 8,
          // Edge options take the edge element's id as their prefix.
          edgeLineBorderColor: (c) => colour(c.raw?.kind),
          edgeLineBorderWidth: (c) => 1 + 3 * Math.min(1, Math.abs(c.raw?.strength ?? 0)),
        }],
      },
      options: {
        maintainAspectRatio: false,
        layout: { padding: { top: 24, bottom: 12, left: 48, right: 48 } },
        plugins: { legend: { display: false }, tooltip: { enabled: false } },
      },
      plugins: [nodeLabels],
    });
  };
}

// ------------------------------------------------------------------ /runs

async function runList() {
  const data = await gql(`{ scenarioRuns(first: 500) { nodes { id name status lastSequence createdAt
      forkedAtSequence parentRun { id name } template { name } evaluation { status } } } }`);
  const rows = data.scenarioRuns.nodes.map((r) =>
    el('tr', { 'data-run': r.id },
      el('td', {}, el('a', { href: `/runs/${r.id}`, text: r.name })),
      el('td', { text: r.template?.name ?? '' }),
      el('td', { class: `status ${r.status}`, text: r.status }),
      el('td', { class: 'num', text: String(r.lastSequence) }),
      el('td', { class: `eval ${r.evaluation.status}`, text: r.evaluation.status }),
      el('td', { text: r.parentRun ? `fork of ${r.parentRun.name} at ${r.forkedAtSequence}` : '' }),
      el('td', { text: new Date(r.createdAt).toLocaleString() }),
    ));
  app.replaceChildren(
    el('h1', { text: 'Runs' }),
    el('table', { id: 'runs' },
      el('thead', {}, el('tr', {}, ...['run', 'template', 'status', 'last sequence', 'evaluation', 'lineage', 'created'].map((h) => el('th', { text: h })))),
      el('tbody', {}, ...rows)),
  );
}

// ------------------------------------------------------------ /runs/{id}

const RUN = `query($r: UUID!) { scenarioRun(id: $r) { id name status lastSequence
  template { name } parentRun { id name } forkedAtSequence forks { id name forkedAtSequence }
  metrics { name unit aggregation value samples }
  evaluation { status criteria { metric operator threshold value passed } }
  engines { engineId engineType group online pendingCount version lastSeenAt inFlight { leaseId } }
  relationships { sourceRole targetRole kind strength } } }`;

const EVENTS = `query($r: UUID!, $after: String) { events(runId: $r, first: 500, after: $after) {
  nodes { id sequence eventType priority payload createdAt } pageInfo { hasNextPage endCursor } } }`;

async function runPage(runId) {
  const header = el('header', { id: 'run-header' });
  const chartBox = el('div', { class: 'chart' }, el('canvas', { id: 'timeline' }));
  const engines = el('section', { id: 'engines' });
  const metrics = el('section', { id: 'metrics' });
  const lineage = el('section', { id: 'lineage' });
  const relationships = el('section', { id: 'relationships' });
  const recent = el('section', { id: 'events' });
  app.replaceChildren(
    el('p', {}, el('a', { href: '/runs', text: '← runs' })),
    header, chartBox,
    el('div', { class: 'columns' }, engines, metrics),
    el('div', { class: 'columns' }, relationships, lineage),
    recent,
  );

  const drawRelationships = relationshipGraph(relationships);
  const events = [];
  const seen = new Set();
  const chart = new Chart(document.getElementById('timeline'), {
    type: 'scatter',
    data: { datasets: [] },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { title: { display: true, text: 'sequence' } }, y: { title: { display: true, text: 'priority' } } },
      plugins: { tooltip: { callbacks: { label: (c) => `#${c.raw.x} ${c.dataset.label} (priority ${c.raw.y})` } } },
    },
  });
  const datasets = new Map();
  function add(event) {
    if (seen.has(event.id)) return;
    seen.add(event.id);
    events.push(event);
    let set = datasets.get(event.eventType);
    if (!set) {
      set = { label: event.eventType, data: [], backgroundColor: COLORS[datasets.size % COLORS.length], pointRadius: 3 };
      datasets.set(event.eventType, set);
      chart.data.datasets.push(set);
    }
    set.data.push({ x: event.sequence, y: event.priority });
  }
  function drawEvents() {
    chart.update();
    const last = [...events].sort((a, b) => b.sequence - a.sequence).slice(0, 50);
    recent.replaceChildren(
      el('h2', { text: `Events (${events.length}, latest first)` }),
      el('table', { id: 'event-table' },
        el('thead', {}, el('tr', {}, ...['sequence', 'type', 'priority', 'payload'].map((h) => el('th', { text: h })))),
        el('tbody', {}, ...last.map((e) => el('tr', { 'data-sequence': String(e.sequence) },
          el('td', { class: 'num', text: String(e.sequence) }),
          el('td', { text: e.eventType }),
          el('td', { class: 'num', text: String(e.priority) }),
          el('td', { class: 'payload', text: JSON.stringify(e.payload).slice(0, 160) }),
        )))),
    );
  }

  async function drawRun() {
    const { scenarioRun: run } = await gql(RUN, { r: runId });
    if (!run) {
      app.replaceChildren(el('p', { class: 'error', id: 'error', text: `no run ${runId}` }));
      return null;
    }
    document.title = `${run.name} - scenario-hub`;
    header.replaceChildren(
      el('h1', { text: run.name }),
      el('p', {},
        el('span', { class: `status ${run.status}`, id: 'run-status', text: run.status }), ' ',
        `template ${run.template?.name ?? '?'}, last sequence `,
        el('span', { id: 'last-sequence', text: String(run.lastSequence) }), ', evaluation ',
        el('span', { class: `eval ${run.evaluation.status}`, id: 'evaluation', text: run.evaluation.status })),
    );
    engines.replaceChildren(
      el('h2', { text: 'Engines' }),
      el('table', { id: 'engine-table' },
        el('thead', {}, el('tr', {}, ...['engine', 'type', 'group', 'online', 'pending', 'in flight', 'state version'].map((h) => el('th', { text: h })))),
        el('tbody', {}, ...run.engines.map((e) => el('tr', { 'data-engine': e.engineId },
          el('td', { class: 'id', text: e.engineId }),
          el('td', { text: e.engineType }),
          el('td', { text: e.group ?? '' }),
          el('td', { class: e.online ? 'online' : 'offline', text: e.online ? 'online' : 'offline' }),
          el('td', { class: 'num', text: String(e.pendingCount) }),
          el('td', { class: 'num', text: String(e.inFlight.length) }),
          el('td', { class: 'num', text: String(e.version) }),
        )))),
    );
    metrics.replaceChildren(
      el('h2', { text: 'Metrics and evaluation' }),
      el('table', { id: 'metric-table' },
        el('thead', {}, el('tr', {}, ...['metric', 'aggregation', 'value', 'samples'].map((h) => el('th', { text: h })))),
        el('tbody', {}, ...run.metrics.map((m) => el('tr', {},
          el('td', { text: `${m.name}${m.unit ? ` (${m.unit})` : ''}` }),
          el('td', { text: m.aggregation }),
          el('td', { class: 'num', text: m.value === null ? '-' : String(Math.round(m.value * 1e4) / 1e4) }),
          el('td', { class: 'num', text: String(m.samples) }),
        )))),
      el('ul', {}, ...run.evaluation.criteria.map((c) => el('li', {
        class: c.passed === null ? 'PENDING' : c.passed ? 'PASSED' : 'FAILED',
        text: `${c.metric} ${c.operator} ${c.threshold}: ${c.value === null ? 'no value yet' : Math.round(c.value * 1e4) / 1e4}`,
      }))),
    );
    drawRelationships(run.relationships);
    const tree = el('ul', {});
    if (run.parentRun) tree.append(el('li', {}, 'forked from ', el('a', { href: `/runs/${run.parentRun.id}`, text: run.parentRun.name }), ` at ${run.forkedAtSequence}`));
    for (const f of run.forks) tree.append(el('li', {}, 'fork ', el('a', { href: `/runs/${f.id}`, text: f.name }), ` at ${f.forkedAtSequence}`));
    lineage.replaceChildren(el('h2', { text: 'Forks' }), run.parentRun || run.forks.length ? tree : el('p', { text: 'none' }));
    return run;
  }

  const run = await drawRun();
  if (!run) return;
  let after = null;
  for (;;) {
    const page = (await gql(EVENTS, { r: runId, after })).events;
    page.nodes.forEach(add);
    if (!page.pageInfo.hasNextPage) break;
    after = page.pageInfo.endCursor;
  }
  drawEvents();
  const last = events.reduce((m, e) => Math.max(m, e.sequence), 0);

  // Live: new events as they commit, the run when it changes, and the
  // engines' presence every few seconds.
  const client = createClient({
    url: `${location.origin.replace(/^http/, 'ws')}/graphql`,
    connectionParams: () => (token() ? { Authorization: `Bearer ${token()}` } : {}),
    retryAttempts: Infinity,
    shouldRetry: () => true,
  });
  let redraw = null;
  const refresh = () => {
    clearTimeout(redraw);
    redraw = setTimeout(() => drawRun().catch(failed), 200);
  };
  client.subscribe(
    { query: `subscription($r: UUID!, $after: Int!) { events(runId: $r, afterSequence: $after) { id sequence eventType priority payload createdAt } }`, variables: { r: runId, after: last } },
    { next: ({ data }) => { if (data?.events) { add(data.events); drawEvents(); refresh(); } }, error: failed, complete: () => {} },
  );
  client.subscribe(
    { query: 'subscription($r: UUID!) { runUpdated(runId: $r) { status } }', variables: { r: runId } },
    { next: refresh, error: failed, complete: () => {} },
  );
  setInterval(() => drawRun().catch(failed), 3000);
}

const match = location.pathname.match(/^\/runs\/([0-9a-fA-F-]{36})\/?$/);
(match ? runPage(match[1]) : runList()).catch(failed);
