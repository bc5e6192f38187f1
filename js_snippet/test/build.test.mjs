// The committed build output (server/static/tailor.js and .map) is what `npm run build` makes
// now, and the tag stays within its gzip size budget.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

import { GZIP_BUDGET, OUTFILE, bundle, gzipSize } from '../build.mjs';

const STALE = 'is stale: run `npm run build` in js_snippet/ and commit server/static/';

test(`gzipped tailor.js is within ${GZIP_BUDGET} bytes`, (t) => {
  const js = readFileSync(OUTFILE);
  const size = gzipSize(js);
  t.diagnostic(`tailor.js: ${js.length} bytes, ${size} gzipped, budget ${GZIP_BUDGET}`);
  assert.ok(size <= GZIP_BUDGET, `tailor.js is ${size} bytes gzipped, over the budget of ${GZIP_BUDGET}`);
});

test('committed build output matches a fresh build', async () => {
  const files = await bundle();
  assert.deepEqual(files.map((f) => f.path.split(/[\\/]/).pop()).sort(), ['tailor.js', 'tailor.js.map']);
  for (const f of files) {
    assert.ok(existsSync(f.path), `${f.path} is missing: run \`npm run build\``);
    assert.ok(Buffer.from(f.contents).equals(readFileSync(f.path)), `${f.path} ${STALE}`);
  }
});

test('the build is an ES2019 IIFE with a linked source map and no dependencies', () => {
  const js = readFileSync(OUTFILE, 'utf8');
  assert.match(js, /^\(\(\)=>\{/);
  assert.match(js, /\n\/\/# sourceMappingURL=tailor\.js\.map\n$/);
  assert.doesNotMatch(js, /\?\?|\?\.[^\d]|\bimport\b|\brequire\(/); // ES2020 syntax, modules
  const map = JSON.parse(readFileSync(OUTFILE + '.map', 'utf8'));
  assert.deepEqual(map.sources, ['../../js_snippet/src/core.js', '../../js_snippet/src/tailor.js']);
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.deepEqual(Object.keys(pkg.dependencies || {}), []);
  assert.ok(js.includes(`"${pkg.version}"`), 'version is baked in');
});
