// Builds the browser assets scenario-hub embeds into its binary, from
// node_modules (installed from package-lock.json) into dist/: GraphiQL's
// files copied as npm ships them, the run viewer (viewer/) bundled with
// esbuild, and one file of every installed package's licence.
// Reproducible: the same lock file gives the same dist/, byte for byte.
//
//   npm --prefix web ci && npm --prefix web run build
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, 'node_modules');
const dist = join(here, 'dist');

// What the GraphiQL page loads (src/http/graphiql.rs embeds these).
const GRAPHIQL = {
  'react.production.min.js': 'react/umd/react.production.min.js',
  'react-dom.production.min.js': 'react-dom/umd/react-dom.production.min.js',
  'graphiql.min.js': 'graphiql/graphiql.min.js',
  'graphiql.min.css': 'graphiql/graphiql.min.css',
};

rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, 'graphiql'), { recursive: true });
for (const [name, source] of Object.entries(GRAPHIQL)) {
  copyFileSync(join(modules, source), join(dist, 'graphiql', name));
}

// The run viewer: one script (chart.js, chartjs-chart-graph and graphql-ws
// bundled in) and its stylesheet.
mkdirSync(join(dist, 'viewer'), { recursive: true });
await build({
  entryPoints: [join(here, 'viewer', 'main.js')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  legalComments: 'none',
  outfile: join(dist, 'viewer', 'viewer.js'),
  logLevel: 'warning',
});
copyFileSync(join(here, 'viewer', 'viewer.css'), join(dist, 'viewer', 'viewer.css'));

// Every installed package (the bundles carry code of many of them), sorted
// by name, with its licence text when it ships one.
function packages(dir) {
  const found = [];
  for (const entry of readdirSync(dir).sort()) {
    if (entry.startsWith('.')) continue;
    const path = join(dir, entry);
    if (entry.startsWith('@')) {
      found.push(...packages(path));
    } else if (existsSync(join(path, 'package.json'))) {
      found.push(path);
      if (existsSync(join(path, 'node_modules'))) found.push(...packages(join(path, 'node_modules')));
    }
  }
  return found;
}
const sections = [];
for (const path of packages(modules)) {
  const meta = JSON.parse(readFileSync(join(path, 'package.json'), 'utf8'));
  const licenceFile = readdirSync(path)
    .sort()
    .find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
  const text = licenceFile ? readFileSync(join(path, licenceFile), 'utf8').trim() : '(no licence file shipped)';
  const licence = typeof meta.license === 'string' ? meta.license : JSON.stringify(meta.license ?? null);
  sections.push(`${meta.name}@${meta.version} (${licence})\n\n${text}\n`);
}
writeFileSync(
  join(dist, 'THIRD_PARTY_LICENSES.txt'),
  `Third-party software in scenario-hub's browser assets (web/package-lock.json)\n\n${sections.join('\n' + '-'.repeat(72) + '\n\n')}`,
);
console.log(`web/dist: ${Object.keys(GRAPHIQL).length} GraphiQL files, the run viewer, ${sections.length} licences`);
