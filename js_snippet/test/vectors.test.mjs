// The shared UTM vectors (tests/contract/vectors/utm.json), which pytest runs through
// sdk/referrer.py campaign_from_query: the tag and the server read a query string alike.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { parseUtm } from '../src/core.js';

const UTM = JSON.parse(readFileSync(new URL('../../tests/contract/vectors/utm.json', import.meta.url), 'utf8'));

describe('utm.json', () => {
  test('has version 1 and uniquely named cases', () => {
    assert.equal(UTM.version, 1);
    const names = UTM.cases.map((c) => c.name);
    assert.equal(new Set(names).size, names.length);
    assert.ok(names.length >= 25);
  });

  for (const { name, search, campaign } of UTM.cases) {
    test(name, () => assert.deepEqual(parseUtm(search) ?? null, campaign)); // null in JSON: no campaign
  }
});
