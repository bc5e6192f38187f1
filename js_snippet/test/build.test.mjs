// The committed build output (server/static/tailor.js, tailor-me.js and their maps) is what
// `npm run build` makes now, each file stays within its gzip size budget, and the source maps
// lead back to src/.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

import { TraceMap, eachMapping } from '@jridgewell/trace-mapping';

import { GZIP_BUDGET, ME_GZIP_BUDGET, ME_OUTFILE, OUTFILE, bundle, gzipSize } from '../build.mjs';

const STALE = 'is stale: run `npm run build` in js_snippet/ and commit server/static/';
const ES2020 = /\?\?|\?\.[^\d]|\brequire\(/; // syntax newer than ES2019 (import() aside), CommonJS

for (const [file, budget] of [
  [OUTFILE, GZIP_BUDGET],
  [ME_OUTFILE, ME_GZIP_BUDGET],
]) {
  const name = file.split(/[\\/]/).pop();
  test(`gzipped ${name} is within ${budget} bytes`, (t) => {
    const js = readFileSync(file);
    const size = gzipSize(js);
    t.diagnostic(`${name}: ${js.length} bytes, ${size} gzipped, budget ${budget}`);
    assert.ok(size <= budget, `${name} is ${size} bytes gzipped, over the budget of ${budget}`);
  });
}

test('committed build output matches a fresh build', async () => {
  const files = await bundle();
  assert.deepEqual(files.map((f) => f.path.split(/[\\/]/).pop()).sort(), ['tailor-me.js', 'tailor-me.js.map', 'tailor.js', 'tailor.js.map']);
  for (const f of files) {
    assert.ok(existsSync(f.path), `${f.path} is missing: run \`npm run build\``);
    assert.ok(Buffer.from(f.contents).equals(readFileSync(f.path)), `${f.path} ${STALE}`);
  }
});

test('the tag is an ES2019 IIFE with a linked source map and no dependencies', () => {
  const js = readFileSync(OUTFILE, 'utf8');
  assert.match(js, /^\(\(\)=>\{/);
  assert.match(js, /\n\/\/# sourceMappingURL=tailor\.js\.map\n$/);
  assert.doesNotMatch(js, ES2020);
  // its one import: tailor-me.js, next to itself, on the first myData() call
  assert.deepEqual(js.match(/\bimport\b[^,]*/g), ['import(new URL("tailor-me.js"']);
  const map = JSON.parse(readFileSync(OUTFILE + '.map', 'utf8'));
  assert.deepEqual(map.sources, ['../../js_snippet/src/core.js', '../../js_snippet/src/tailor.js']);
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.deepEqual(Object.keys(pkg.dependencies || {}), []);
  assert.ok(js.includes(`"${pkg.version}"`), 'version is baked in');
});

test('tailor-me.js is an ES2019 module exporting myData, with a linked source map', () => {
  const js = readFileSync(ME_OUTFILE, 'utf8');
  assert.match(js, /export\{\w+ as myData\};\n\/\/# sourceMappingURL=tailor-me\.js\.map\n$/);
  assert.doesNotMatch(js, ES2020);
  assert.doesNotMatch(js, /\bimport\b|\bwindow\b/); // nothing bundled in twice, no globals
  const map = JSON.parse(readFileSync(ME_OUTFILE + '.map', 'utf8'));
  assert.deepEqual(map.sources, ['../../js_snippet/src/core.js', '../../js_snippet/src/tailor-me.js']);
});

test("the tag's source map survives both minifiers: each named mapping points at that name in src/", () => {
  const raw = JSON.parse(readFileSync(OUTFILE + '.map', 'utf8'));
  const map = new TraceMap(raw);
  const lines = raw.sourcesContent.map((s) => s.split('\n'));
  const wrong = [];
  let named = 0;
  eachMapping(map, (m) => {
    if (!m.name) return;
    named++;
    const line = lines[raw.sources.indexOf(m.source)][m.originalLine - 1];
    if (!line.startsWith(m.name, m.originalColumn)) wrong.push(`${m.name} at ${m.source}:${m.originalLine}:${m.originalColumn}`);
  });
  assert.ok(named > 1000, `only ${named} named mappings`);
  assert.deepEqual(wrong, []);
});
