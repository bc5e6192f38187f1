// The bodies the tag sends (DecideRequest, EventBatch) against the wire schema generated from
// sdk/schema.py (sdk/data/schema.json). When that file is absent the field names are checked
// against a list kept here.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { applyEvent, behavior, buildRequest, pageView, startSession, toEvent } from '../src/core.js';

const SCHEMA_FILE = new URL('../../sdk/data/schema.json', import.meta.url);

/** Field names of sdk/schema.py, for when schema.json is not there. */
const FIELDS = {
  DecideRequest: 'visitorId sessionId userId consent:Consent context:Context behavior:Behavior slots timestamp visitorToken userToken',
  Consent: 'personalization storage',
  Context: 'page:Page campaign:Campaign userAgent userAgentData:UserAgentData locale timezone screen:Screen location',
  Page: 'url path referrer title search',
  Campaign: 'source medium name term content',
  UserAgentData: 'brands:UserAgentBrand[] mobile platform platformVersion model',
  UserAgentBrand: 'brand version',
  Screen: 'width height density touch',
  Behavior: 'pageViews sessionCount categoriesViewed searches searchesWithoutResults cartItems cartValue purchases revenue daysSinceLastVisit daysSinceLastPurchase',
  EventBatch: 'events:Event[] sentAt consent:Consent visitorToken',
  Event: 'type visitorId sessionId decisionId slot variantId offerId value currency timestamp properties eventId',
  DataRequest: 'visitorToken',
};

/** The $defs of schema.json, or a names-only schema built from FIELDS. */
function loadDefs() {
  if (existsSync(SCHEMA_FILE)) return { defs: JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')).$defs, full: true };
  const defs = {};
  for (const [name, fields] of Object.entries(FIELDS)) {
    const properties = {};
    for (const f of fields.split(' ')) {
      const [key, ref] = f.split(':');
      properties[key] = !ref ? {} : ref.endsWith('[]') ? { items: { $ref: `#/$defs/${ref.slice(0, -2)}` } } : { $ref: `#/$defs/${ref}` };
    }
    defs[name] = { type: 'object', properties };
  }
  return { defs, full: false };
}
const { defs, full } = loadDefs();

const TYPES = {
  string: (v) => typeof v == 'string',
  number: (v) => typeof v == 'number' && isFinite(v),
  integer: Number.isInteger,
  boolean: (v) => typeof v == 'boolean',
  null: (v) => v === null,
  object: (v) => v !== null && typeof v == 'object' && !Array.isArray(v),
  array: Array.isArray,
};

/**
 * Errors of `value` against JSON Schema `s`: the subset msgspec emits ($ref, anyOf, enum, type,
 * properties, required, additionalProperties, items, min/maxItems, min/maxLength, pattern,
 * minimum, maximum, maxProperties). Unlike JSON Schema, a key the schema does not list is an
 * error: the server would ignore it, so it is a typo or drift here.
 */
function validate(s, value, path = '$') {
  if (s.$ref) return validate(defs[s.$ref.split('/').pop()], value, path);
  if (s.anyOf) {
    const all = s.anyOf.map((alt) => validate(alt, value, path));
    return all.some((e) => e.length === 0) ? [] : all.flat();
  }
  const err = [];
  if (s.enum && !s.enum.includes(value)) err.push(`${path}: ${JSON.stringify(value)} not in ${s.enum}`);
  if (s.type && !TYPES[s.type](value)) return [...err, `${path}: expected ${s.type}, got ${JSON.stringify(value)}`];
  if (typeof value == 'string') {
    const n = [...value].length;
    if (s.maxLength != null && n > s.maxLength) err.push(`${path}: longer than ${s.maxLength}`);
    if (s.minLength != null && n < s.minLength) err.push(`${path}: shorter than ${s.minLength}`);
    if (s.pattern && !new RegExp(s.pattern, 'u').test(value)) err.push(`${path}: does not match ${s.pattern}`);
  }
  if (typeof value == 'number') {
    if (s.minimum != null && value < s.minimum) err.push(`${path}: below ${s.minimum}`);
    if (s.maximum != null && value > s.maximum) err.push(`${path}: above ${s.maximum}`);
  }
  if (Array.isArray(value)) {
    if (s.maxItems != null && value.length > s.maxItems) err.push(`${path}: more than ${s.maxItems} items`);
    if (s.minItems != null && value.length < s.minItems) err.push(`${path}: fewer than ${s.minItems} items`);
    if (s.items) value.forEach((v, i) => err.push(...validate(s.items, v, `${path}[${i}]`)));
  } else if (TYPES.object(value)) {
    if (s.maxProperties != null && Object.keys(value).length > s.maxProperties) err.push(`${path}: more than ${s.maxProperties} properties`);
    for (const r of s.required || []) if (!(r in value)) err.push(`${path}.${r}: required`);
    for (const [k, v] of Object.entries(value)) {
      const sub = s.properties ? s.properties[k] : s.additionalProperties;
      if (sub) err.push(...validate(sub, v, `${path}.${k}`));
      else if (s.properties) err.push(`${path}.${k}: not a field of the schema`);
    }
  }
  return err;
}

/** What JSON.stringify puts on the wire (undefined dropped, toJSON applied). */
const wire = (body) => JSON.parse(JSON.stringify(body));
const assertValid = (def, body) => assert.deepEqual(validate({ $ref: `#/$defs/${def}` }, wire(body)), []);

const now = Date.UTC(2025, 2, 3, 9, 30);

/** A window-shaped browser, as buildRequest reads it. */
function fakeWindow(over = {}) {
  return {
    location: { href: 'https://shop.test/p/shoes?utm_source=newsletter&x=1#reviews', pathname: '/p/shoes', search: '?utm_source=newsletter&x=1' },
    document: { referrer: 'https://www.google.com/', title: 'Shoes – Tailor demo store' },
    navigator: {
      userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36',
      language: 'de-DE',
      maxTouchPoints: 0,
      // NavigatorUAData serialises itself with toJSON, as in Chromium.
      userAgentData: {
        brands: [{ brand: 'Chromium', version: '130' }],
        mobile: false,
        platform: 'Linux',
        getHighEntropyValues() {},
        toJSON() {
          return { brands: this.brands, mobile: this.mobile, platform: this.platform };
        },
      },
    },
    screen: { width: 1920, height: 1080 },
    devicePixelRatio: 1.25,
    ...over,
  };
}

function profile() {
  let p = startSession({});
  p = pageView(p, now - 864e5, ['electronics', 'shoes']);
  p = applyEvent(p, 'search', { results: 0 }, now);
  p = applyEvent(p, 'cart', { items: 1, value: 59.9 }, now);
  p = startSession(p);
  return pageView(p, now, ['shoes']);
}

function request(w = fakeWindow(), over = {}) {
  return buildRequest(
    w,
    {
      visitorId: '1234-5678',
      visitorToken: 't1.MTIzNC01Njc4.1741000000.' + 'A'.repeat(27),
      sessionId: '9-8-7',
      userId: 'user_42',
      userToken: 'ab'.repeat(32),
      consent: { personalization: true, storage: true },
      behavior: behavior(profile(), now),
      slots: ['hero', 'banner', 'recommendation'],
      ...over,
    },
    { source: 'newsletter', medium: 'email', name: 'spring' },
    'Europe/Berlin',
  );
}

describe('DecideRequest', () => {
  test(`matches the schema (${full ? 'sdk/data/schema.json' : 'field list: schema.json absent'})`, () => {
    const body = wire(request());
    assertValid('DecideRequest', body);
    assert.deepEqual(body.context.page, {
      url: 'https://shop.test/p/shoes?utm_source=newsletter&x=1',
      path: '/p/shoes',
      referrer: 'https://www.google.com/',
      title: 'Shoes – Tailor demo store',
      search: '?utm_source=newsletter&x=1',
    });
    assert.deepEqual(body.context.userAgentData, { brands: [{ brand: 'Chromium', version: '130' }], mobile: false, platform: 'Linux' });
    assert.deepEqual(body.context.screen, { width: 1920, height: 1080, density: 1.25, touch: false });
    assert.equal(body.context.timezone, 'Europe/Berlin');
    assert.equal(body.context.locale, 'de-DE');
    assert.deepEqual(body.context.campaign, { source: 'newsletter', medium: 'email', name: 'spring' });
    assert.equal(body.userId, 'user_42');
    assert.equal(body.userToken, 'ab'.repeat(32));
    assert.match(body.visitorToken, /^t1\./);
    assert.deepEqual(body.slots, ['hero', 'banner', 'recommendation']);
    assert.equal(body.behavior.sessionCount, 2);
    assert.equal(body.behavior.pageViews, 1);
    assert.equal(body.behavior.searchesWithoutResults, 1);
    assert.equal(body.behavior.daysSinceLastVisit, 1);
    assert.deepEqual(body.behavior.categoriesViewed, ['electronics', 'shoes']);
  });

  test('fills the fields the server relies on', () => {
    const body = wire(request());
    const paths = [];
    const walk = (v, p) => (TYPES.object(v) && !p.endsWith('.behavior') ? Object.entries(v).forEach(([k, x]) => walk(x, `${p}.${k}`)) : paths.push(p));
    walk(body, '$');
    for (const p of ['$.visitorId', '$.sessionId', '$.consent.personalization', '$.context.page.url', '$.context.userAgent', '$.context.screen.touch', '$.slots']) {
      assert.ok(paths.includes(p), p);
    }
  });

  test('without personalization consent: no user id or user token, no behaviour', () => {
    const body = wire(request(fakeWindow(), { consent: { personalization: false, storage: false }, visitorToken: undefined }));
    assertValid('DecideRequest', body);
    assert.equal(body.userId, undefined);
    assert.equal(body.userToken, undefined);
    assert.equal(body.visitorToken, undefined);
    assert.deepEqual(body.behavior, {});
    assert.deepEqual(body.consent, { personalization: false, storage: false });
  });

  test('cuts long strings, drops bad slot ids, tolerates a bare browser', () => {
    const w = fakeWindow({
      location: { href: 'https://shop.test/?q=' + 'é'.repeat(5000), pathname: '/', search: '?q=' + 'é'.repeat(5000) },
      document: { referrer: '', title: '🛍️'.repeat(300) },
      navigator: { userAgent: 'Mozilla/5.0' },
    });
    const slots = ['hero', 'bad id', '', 'x'.repeat(65), ...Array.from({ length: 40 }, (_, i) => 's' + i)];
    const body = wire(request(w, { slots }));
    assertValid('DecideRequest', body);
    assert.equal([...body.context.page.title].length, 256);
    assert.equal(body.context.page.referrer, undefined);
    assert.equal(body.context.userAgentData, undefined);
    assert.equal(body.slots.length, 32);
    assert.equal(body.slots[0], 'hero');
  });
});

describe('EventBatch', () => {
  test('tracked events match the schema', () => {
    const decision = { decisionId: 'dec_1', visitorId: 'minted.by-server', slots: { hero: { variantId: 'hero-spring', offerId: 'spring-sale' } } };
    const c = { sessionId: '9-8-7', decision, now, eventId: '1-2-3-4' };
    const events = [
      toEvent('impression', { slot: 'hero' }, c),
      toEvent('click', { slot: 'hero' }, c),
      toEvent('conversion', { value: 20, currency: 'EUR', properties: { sku: 'A1', qty: 2 } }, c),
      toEvent('pageview', { properties: { timeToDecisionMs: 120, slotsHiddenMs: 80, timedOut: false } }, c),
    ];
    const consent = { personalization: true, storage: true };
    assertValid('EventBatch', { visitorToken: 't1.x.1.y', events, consent });
    const e = wire(events[1]);
    assert.equal(e.decisionId, 'dec_1');
    assert.equal(e.visitorId, 'minted.by-server');
    assert.equal(e.eventId, '1-2-3-4');
    assert.equal(e.variantId, 'hero-spring');
    assert.equal(e.offerId, 'spring-sale');
  });

  test('a data request (myData, forget) matches the schema', () => {
    assertValid('DataRequest', { visitorToken: 't1.x.1.y' });
  });

  test('the validator itself rejects drift', () => {
    const errors = validate({ $ref: '#/$defs/Event' }, { type: 'click', visitorId: 'v', sesionId: 's' });
    assert.ok(errors.some((e) => e.includes('sesionId')), errors.join('\n'));
    if (full) assert.ok(validate({ $ref: '#/$defs/Event' }, { type: 'purchase', visitorId: 'v' }).length > 0);
  });
});
