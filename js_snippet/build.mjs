/**
 * Builds the tag: src/tailor.js (+ src/core.js) -> ../server/static/tailor.js and tailor.js.map,
 * minified IIFE for ES2019 browsers with a linked source map, and prints the gzipped size.
 * The output is committed so the Python server needs no npm at run time; test/build.test.mjs
 * fails when it is stale or over the size budget.
 *
 * `node build.mjs` writes the files; `bundle()` returns them without writing (for the tests).
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
export const OUTFILE = join(here, '..', 'server', 'static', 'tailor.js');
/**
 * Gzipped bytes the tag may weigh; test/build.test.mjs enforces it. 4096 until visitor tokens,
 * event ids and the visitor's own data (myData, forget) came in with the privacy work: 4,069
 * bytes before, about 4,390 after, with the savings found on the way (see README.md).
 */
export const GZIP_BUDGET = 4400;

export const gzipSize = (bytes) => gzipSync(bytes, { level: 9 }).length;

/** The build outputs as [{path, contents}] (absolute paths, Uint8Array contents), not written. */
export async function bundle() {
  const { version } = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'));
  const result = await esbuild.build({
    entryPoints: [join(here, 'src', 'tailor.js')],
    outfile: OUTFILE,
    bundle: true,
    minify: true,
    format: 'iife',
    target: 'es2019',
    sourcemap: 'linked',
    legalComments: 'none',
    charset: 'utf8',
    define: { __VERSION__: JSON.stringify(version) },
    write: false,
    logLevel: 'warning',
  });
  return result.outputFiles.map((f) => ({ path: f.path, contents: f.contents }));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const files = await bundle();
  for (const f of files) {
    mkdirSync(dirname(f.path), { recursive: true });
    writeFileSync(f.path, f.contents);
  }
  const js = files.find((f) => f.path === OUTFILE).contents;
  console.log(`tailor.js: ${js.length} bytes, ${gzipSize(js)} gzipped (budget ${GZIP_BUDGET})`);
}
