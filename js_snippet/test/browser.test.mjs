// The built tag (server/static/tailor.js) in headless Chromium, against a stub decide API on
// 127.0.0.1: slot hiding and timeout, CORS without preflight, sanitised rendering, the command
// queue, consent and Global Privacy Control, the event beacon, visitor tokens and the visitor's
// own data (myData, forget), and the demo page.
// Fails when no Chromium is found: `make test` installs Debian's (CHROMIUM=/path overrides).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

const STATIC = new URL('../../server/static/', import.meta.url);
const CHROMIUM = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p) => p && existsSync(p));
const ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * The visitor id and token a server answers `req` with, as the real one does: with storage
 * consent, the id sent when its token proves it, else a new id and a token for it; without, the
 * id as sent and no token. The stub's token for id X is "tok.X".
 */
function identity(req, n) {
  if (!req.consent.storage) return { visitorId: req.visitorId, visitorToken: null };
  const visitorId = req.visitorToken === 'tok.' + req.visitorId ? req.visitorId : 'minted-' + n;
  return { visitorId, visitorToken: 'tok.' + visitorId };
}

/** A decision of the schema's shape, with hostile content in places. */
function decision(req, id = 'dec_1') {
  const slot = (variantId, content) => ({ variantId, offerId: 'spring-sale', content, propensity: 0.9, reason: 'persona:deal_hunter' });
  return {
    decisionId: id,
    modelVersion: 'test-1',
    ...identity(req, id),
    sessionId: req.sessionId,
    personalized: req.consent.personalization,
    persona: { id: 'deal_hunter', name: 'Deal hunter', affinities: { deal_hunter: 0.7, techie: 0.3 } },
    segment: { id: 3, distance: 0.42 },
    lifecycle: { stage: 'returning', rule: 'sessionCount >= 2' },
    offers: [{ id: 'spring-sale', name: 'Spring sale', score: 0.8, rank: 1 }],
    slots: {
      hero: slot('hero-html', {
        type: 'html',
        html:
          '<h2 onclick="window.__pwned=1">Spring <em>sale</em></h2><script>window.__pwned=2</script>' +
          '<img src="x" onerror="window.__pwned=3"><a href="javascript:window.__pwned=4">bad</a>' +
          '<a href="/deals" style="color:red" target="_blank">Deals</a><iframe src="/x"></iframe><p class="fine">30% off</p>',
      }),
      banner: slot('banner-text', { type: 'text', text: '<b>Free shipping</b> today' }),
      recommendation: slot('rec-link', { type: 'link', href: 'https://shop.test/p/1', text: 'Headphones' }),
      unsafe: slot('bad-link', { type: 'link', href: ' JAVA\tscript:window.__pwned=5', text: 'Click' }),
      picture: slot('img', { type: 'image', imageUrl: '/img.png', alt: 'A picture' }),
      absent: slot('nowhere', { type: 'text', text: 'not on the page' }),
      ...Object.fromEntries(req.slots.filter((s) => s.startsWith('extra')).map((s) => [s, slot(s + '-text', { type: 'text', text: 'for ' + s })])),
    },
    signals: { deviceType: 'desktop', os: 'Linux', browser: 'Chrome', touch: false, referrerClass: 'email', referrerSource: 'newsletter', searchTerms: null, country: null, localHour: 9, localWeekday: 1 },
    reasons: [{ code: 'utm', message: 'campaign newsletter/email' }],
    ttl: 1800,
  };
}

/** A test page: slots with default content, the queue, the tag, and a script that reports. */
function page({ api, timeout, consent = 'granted', before = '', after: script, load = 'async' }) {
  const attrs = [`data-key="pk_test"`, `data-endpoint="${api}"`, timeout && `data-timeout="${timeout}"`, consent && `data-consent="${consent}"`, 'data-debug'];
  return `<!doctype html><html><head><title>Test page</title>
<script>
window.tailor = window.tailor || [];
window.decisions = [];
tailor.push(["identify", "user_42"]);
tailor.push(["track", "conversion", { value: 20, currency: "EUR" }]);
tailor.push(["onDecision", function (d, applied) { decisions.push({ id: d.decisionId, applied: applied }); }]);
window.report = function (extra) {
  var slots = {};
  document.querySelectorAll("[data-tailor-slot]").forEach(function (el) {
    slots[el.dataset.tailorSlot] = { html: el.innerHTML, variant: el.dataset.tailorVariant || null, decision: el.dataset.tailorDecision || null };
  });
  var ls = {};
  ["tailor.vid", "tailor.sid", "tailor.profile", "tailor.tok"].forEach(function (k) { ls[k] = localStorage.getItem(k); });
  var body = Object.assign({ slots: slots, pending: document.documentElement.hasAttribute("data-tailor-pending"),
    pwned: window.__pwned || null, version: window.tailor.version, decisions: decisions, storage: ls }, extra);
  return fetch("report", { method: "POST", body: JSON.stringify(body) });
};
${before}
</script>
<script ${load} src="/tag/v1/tailor.js" ${attrs.filter(Boolean).join(' ')}></script>
</head><body>
<div data-tailor-slot="hero"><h1>Default hero</h1></div>
<div data-tailor-slot="banner">Default banner</div>
<div data-tailor-slot="recommendation"><a href="/best">Bestsellers</a></div>
<div data-tailor-slot="unsafe">Default unsafe</div>
<div data-tailor-slot="picture">Default picture</div>
<p data-tailor-category="electronics">TV</p><p data-tailor-category="audio">Speakers</p>
<script>${script}</script>
</body></html>`;
}

test('a Chromium binary is available', () => {
  assert.ok(CHROMIUM, 'no Chromium found: install Debian chromium or set CHROMIUM');
});

describe('the tag in Chromium', () => {
  let site;
  let api;
  let apiBase;
  const scenarios = new Map(); // name -> {page, delay, requests, reports}
  let current; // the scenario whose page is open (one at a time)
  const tagRequests = []; // {path, scenario} per request for the tag's files
  /** The tag's files (by path) the scenario's page fetched, in order. */
  const tagFiles = (name) => tagRequests.filter((q) => q.scenario === name).map((q) => q.path);

  /** Both servers: /s/<scenario>/{page,report,v1/...}; paths without /s/ belong to the demo. */
  const handler = (req, res) => {
    const url = new URL(req.url, 'http://x');
    const [, name, path] = /^\/s\/([^/]+)(\/.*)$/.exec(url.pathname) || [0, 'demo', url.pathname];
    const sc = scenarios.get(name);
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (path.startsWith('/v1/')) {
        res.setHeader('Access-Control-Allow-Origin', '*');
        sc.requests.push({ method: req.method, path, query: url.search, type: req.headers['content-type'], body });
        if (req.method !== 'POST') return res.writeHead(405).end();
        if (path === '/v1/me' || path === '/v1/me/forget') {
          const token = JSON.parse(body).visitorToken;
          const known = token && token.startsWith('tok.minted-') && !(sc.forgotten || []).includes(token);
          if (!known) return res.writeHead(401, { 'Content-Type': 'application/problem+json' }).end('{"type":"invalid-visitor-token"}');
          if (path === '/v1/me/forget') (sc.forgotten = sc.forgotten || []).push(token);
          const answer = path === '/v1/me' ? { visitorId: token.slice(4), profile: { sessionCount: 3 }, stored: true } : { erased: true };
          return res.setHeader('Content-Type', 'application/json').end(JSON.stringify(answer));
        }
        if (path === '/v1/events') {
          const status = (sc.eventStatus || []).shift() || 202;
          return res.writeHead(status, status === 429 ? { 'Retry-After': '1', 'Access-Control-Expose-Headers': 'Retry-After' } : {}).end();
        }
        if (sc.status) return res.writeHead(sc.status).end('{"title":"unavailable"}');
        const n = sc.requests.filter((r) => r.path === '/v1/decide').length;
        const dec = decision(JSON.parse(body), 'dec_' + n);
        return setTimeout(() => res.setHeader('Content-Type', 'application/json').end(JSON.stringify(dec)), n === 1 ? sc.delay || 0 : 0);
      }
      if (/^\/tag\/v1\/tailor(-me)?\.js(\.map)?$/.test(path)) {
        tagRequests.push({ path, scenario: current });
        if (path.includes('-me') && scenarios.get(current).noModule) return res.writeHead(404).end();
        return res.setHeader('Content-Type', 'text/javascript').end(readFileSync(new URL(path.split('/').pop(), STATIC)));
      }
      if (path === '/report') {
        sc.reports.push(JSON.parse(body));
        sc.onReport && sc.onReport();
        return res.end('ok');
      }
      if (path === '/page') {
        if (sc.nonce) res.setHeader('Content-Security-Policy', `script-src 'nonce-${sc.nonce}'; style-src 'nonce-${sc.nonce}'`);
        return res.setHeader('Content-Type', 'text/html; charset=utf-8').end(sc.nonce ? sc.page.replace(/<script\b/g, `<script nonce="${sc.nonce}"`) : sc.page);
      }
      res.writeHead(404).end();
    });
  };

  const listen = (server) => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));

  before(async () => {
    site = http.createServer(handler);
    api = http.createServer(handler); // another port: another origin, so requests to it are cross-origin
    await listen(site);
    apiBase = `http://127.0.0.1:${await listen(api)}`;
  });
  after(() => {
    site.close();
    api.close();
  });

  /** Opens the scenario's page in a fresh browser profile; resolves when it has reported `reports` times. */
  async function run(name, opts, reports = 1, query = '') {
    const sc = { ...opts, requests: [], reports: [] };
    sc.page = opts.page || page({ ...opts, api: `${apiBase}/s/${name}` });
    scenarios.set(name, sc);
    current = name;
    const profile = mkdtempSync(join(tmpdir(), 'tailor-chromium-'));
    const url = `http://127.0.0.1:${site.address().port}/s/${name}/page${query}`;
    const args = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check', '--disable-extensions', `--user-data-dir=${profile}`, url];
    const browser = spawn(CHROMIUM, args, { stdio: 'ignore', detached: true });
    try {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no report within 15 s`)), 15_000);
        sc.onReport = () => sc.reports.length >= reports && (clearTimeout(timer), resolve());
      });
      await new Promise((r) => setTimeout(r, 300)); // let a beacon sent with the last report land
    } finally {
      try {
        process.kill(-browser.pid, 'SIGKILL'); // the browser's own process group
      } catch {}
      rmSync(profile, { recursive: true, force: true });
    }
    return sc;
  }

  test('applies a decision: sanitised content, CORS-simple request, queue, beacon', async () => {
    const sc = await run(
      'apply',
      {
        // Once impressions had time to be seen: a click, a search, the page hides, then the report.
        after: `tailor.push(["onDecision", function () {
          setTimeout(function () {
            tailor.track("click", { slot: "hero" });
            tailor.track("search", { results: 0 });
            dispatchEvent(new Event("pagehide"));
            report();
          }, 300);
        }]);`,
      },
      1,
      '?utm_source=newsletter&utm_medium=email&utm_campaign=spring',
    );
    const [r] = sc.reports;
    assert.equal(r.pwned, null);
    assert.equal(r.pending, false);
    assert.match(r.version, /^\d+\.\d+\.\d+/);
    assert.deepEqual(tagFiles('apply'), ['/tag/v1/tailor.js']); // myData's module only when called
    assert.deepEqual(r.decisions, [{ id: 'dec_1', applied: true }]);
    assert.deepEqual(r.slots.hero, { html: '<h2>Spring <em>sale</em></h2><img src="x"><a>bad</a><a href="/deals">Deals</a><p class="fine">30% off</p>', variant: 'hero-html', decision: 'dec_1' });
    assert.equal(r.slots.banner.html, '&lt;b&gt;Free shipping&lt;/b&gt; today');
    assert.equal(r.slots.recommendation.html, '<a href="https://shop.test/p/1">Headphones</a>');
    assert.deepEqual(r.slots.unsafe, { html: 'Default unsafe', variant: null, decision: null });
    assert.equal(r.slots.picture.html, '<img src="/img.png" alt="A picture">');

    assert.ok(!sc.requests.some((q) => q.method === 'OPTIONS'), 'no CORS preflight');
    const decide = sc.requests.find((q) => q.path === '/v1/decide');
    assert.equal(decide.method, 'POST');
    assert.equal(decide.query, '?key=pk_test');
    assert.equal(decide.type, 'text/plain;charset=UTF-8');
    const body = JSON.parse(decide.body);
    assert.match(body.visitorId, ID);
    assert.equal(body.visitorToken, undefined); // a first visit has none
    // the server's new id and its token are kept
    assert.equal(r.storage['tailor.vid'], 'minted-dec_1');
    assert.equal(r.storage['tailor.tok'], 'tok.minted-dec_1');
    assert.equal(body.sessionId, JSON.parse(r.storage['tailor.sid']).id);
    assert.equal(body.userId, 'user_42');
    assert.equal(body.userToken, undefined); // identify() without a token
    assert.deepEqual(body.consent, { personalization: true, storage: true });
    assert.deepEqual(body.slots, ['hero', 'banner', 'recommendation', 'unsafe', 'picture']);
    assert.deepEqual(body.context.campaign, { source: 'newsletter', medium: 'email', name: 'spring' });
    assert.equal(body.context.page.title, 'Test page');
    assert.equal(body.context.page.search, '?utm_source=newsletter&utm_medium=email&utm_campaign=spring');
    assert.ok(body.context.userAgent.includes('Chrome'));
    assert.equal(typeof body.context.userAgentData.mobile, 'boolean');
    assert.ok(Array.isArray(body.context.userAgentData.brands));
    assert.equal(typeof body.context.timezone, 'string');
    assert.equal(typeof body.context.screen.width, 'number');
    assert.equal(body.behavior.sessionCount, 1);
    assert.equal(body.behavior.pageViews, 1);
    assert.equal(body.behavior.purchases, 1); // the queued conversion ran before the request
    assert.equal(body.behavior.revenue, 20);
    assert.deepEqual(body.behavior.categoriesViewed, ['electronics', 'audio']);

    const beacons = sc.requests.filter((q) => q.path === '/v1/events');
    assert.ok(beacons.length, 'events sent on pagehide');
    const events = [];
    for (const beacon of beacons) {
      assert.equal(beacon.query, '?key=pk_test');
      assert.match(beacon.type, /^text\/plain/);
      const batch = JSON.parse(beacon.body);
      assert.deepEqual(Object.keys(batch), ['visitorToken', 'events', 'consent']);
      assert.equal(batch.visitorToken, 'tok.minted-dec_1');
      assert.deepEqual(batch.consent, { personalization: true, storage: true });
      events.push(...batch.events);
    }
    // every event is about the decision's visitor, with an event id of its own
    assert.ok(events.every((e) => !isNaN(Date.parse(e.timestamp)) && e.visitorId === 'minted-dec_1'), JSON.stringify(events));
    assert.ok(events.every((e) => ID.test(e.eventId)));
    assert.equal(new Set(events.map((e) => e.eventId)).size, events.length);
    const row = (e) => [e.type, e.slot, e.value, e.currency, e.decisionId, e.variantId];
    // tracked before the tag had a decision: it waited for the page's first one
    assert.deepEqual(row(events.find((e) => e.type === 'conversion')), ['conversion', undefined, 20, 'EUR', 'dec_1', undefined]);
    assert.deepEqual(row(events.find((e) => e.type === 'click')), ['click', 'hero', undefined, undefined, 'dec_1', 'hero-html']);
    const view = events.find((e) => e.type === 'pageview');
    assert.equal(view.decisionId, 'dec_1');
    assert.equal(view.properties.timedOut, false);
    assert.ok(view.properties.timeToDecisionMs > 0 && view.properties.slotsHiddenMs >= 0, JSON.stringify(view));
    // Impressions of the visible filled slots (the viewport shows them all), once each.
    const shown = events.filter((e) => e.type === 'impression').map((e) => [e.slot, e.variantId, e.decisionId]);
    assert.deepEqual(shown.sort(), [['banner', 'banner-text', 'dec_1'], ['hero', 'hero-html', 'dec_1'], ['picture', 'img', 'dec_1'], ['recommendation', 'rec-link', 'dec_1']]);
  });

  test('visitor token: kept, sent back; identify with a user token; myData and forget', async () => {
    const sc = await run('mine', {
      before: `tailor.push(["identify", "user_7", "ab12cd"]);`,
      after: `tailor.push(["onDecision", function (d) {
        if (d.decisionId !== "dec_1") return;
        var out = {};
        var ls = function () { return Object.keys(localStorage).filter(function (k) { return k.indexOf("tailor.") === 0; }); };
        var fetched = function () { return performance.getEntriesByType("resource").filter(function (e) { return /tailor-me\.js$/.test(e.name); }).length; };
        tailor.decide().then(function () { out.meBefore = fetched(); return tailor.myData(); })
          .then(function (m) { out.mine = m; out.meAfter = fetched(); return tailor.forget(); })
          .then(function (f) { out.forgot = f; out.keysAfter = ls(); return tailor.myData(); })
          .then(function (m) { out.mineAfter = m; return tailor.forget(); })
          .then(function (f) { out.forgotAgain = f; tailor.track("click", { slot: "hero" }); return tailor.decide(); })
          .then(function () { out.keysLater = ls(); setTimeout(function () { report(out); }, 1300); });
      }]);`,
    });
    const [r] = sc.reports;
    const posts = (path) => sc.requests.filter((q) => q.path === path).map((q) => JSON.parse(q.body));
    const [first, second, third] = posts('/v1/decide');
    // the first visit sends no token and gets the server's id; the next decide sends both
    assert.equal(first.visitorToken, undefined);
    assert.equal(second.visitorId, 'minted-dec_1');
    assert.equal(second.visitorToken, 'tok.minted-dec_1');
    assert.deepEqual([first.userId, first.userToken], ['user_7', 'ab12cd']);
    assert.deepEqual([second.userId, second.userToken], ['user_7', 'ab12cd']);

    // myData is in tailor-me.js, which the page fetches once, on the first call only
    assert.deepEqual([r.meBefore, r.meAfter], [0, 1]);
    assert.deepEqual(tagFiles('mine'), ['/tag/v1/tailor.js', '/tag/v1/tailor-me.js']);
    // myData: the server's answer for the token, what the tag keeps, why this content
    assert.deepEqual(posts('/v1/me'), [{ visitorToken: 'tok.minted-dec_1' }]);
    assert.equal(r.mine.visitorId, 'minted-dec_1');
    assert.deepEqual(r.mine.stored, { visitorId: 'minted-dec_1', profile: { sessionCount: 3 }, stored: true });
    assert.equal(r.mine.local.profile.sessionCount, 1);
    assert.equal(r.mine.local.profile.pageViews, 1);
    assert.match(r.mine.local.session.id, ID);
    assert.deepEqual(r.mine.reasons.reasons, [{ code: 'utm', message: 'campaign newsletter/email' }]);
    assert.equal(r.mine.reasons.persona.id, 'deal_hunter');
    assert.equal(r.mine.reasons.slots.hero.reason, 'persona:deal_hunter');

    // forget: erased on the server with the token, nothing left in the page
    assert.deepEqual(posts('/v1/me/forget'), [{ visitorToken: 'tok.minted-dec_1' }]);
    assert.equal(r.forgot, true);
    assert.deepEqual(r.keysAfter, []);
    assert.notEqual(r.mineAfter.visitorId, 'minted-dec_1'); // a fresh id
    assert.deepEqual([r.mineAfter.stored, r.mineAfter.reasons], [null, null]); // nothing asked: no token
    assert.equal(r.forgotAgain, true); // nothing stored: nothing to erase
    assert.equal(posts('/v1/me').length, 1);
    assert.equal(posts('/v1/me/forget').length, 1);

    // afterwards: a new visitor without a token, and no event about the old decisions
    assert.match(third.visitorId, ID);
    assert.ok(![first.visitorId, 'minted-dec_1', r.mineAfter.visitorId].includes(third.visitorId)); // forget() twice: two fresh ids
    assert.equal(third.visitorToken, undefined);
    assert.deepEqual(r.keysLater.sort(), ['tailor.profile', 'tailor.sid', 'tailor.tok', 'tailor.vid']);
    assert.equal(r.storage['tailor.vid'], 'minted-dec_3');
    const events = posts('/v1/events').flatMap((b) => b.events);
    assert.ok(!events.some((e) => e.type === 'click'), JSON.stringify(events)); // no decision since forget() when tracked
    assert.ok(events.every((e) => e.visitorId === 'minted-dec_1' || e.visitorId === 'minted-dec_3'));
  });

  test('myData with a token the server does not know: stored is null; forget says false', async () => {
    const sc = await run('unknown', {
      before: `localStorage.setItem("tailor.vid", "old-visitor"); localStorage.setItem("tailor.tok", "tok.forged");`,
      after: `tailor.push(["onDecision", function () {
        var out = {};
        // the decide answered with a new id and token: put the unknown one back to ask with it
        localStorage.setItem("tailor.tok", "tok.forged");
        tailor.setConsent({ personalization: true, storage: true });
        tailor.myData().then(function (m) { out.mine = m; return tailor.forget(); })
          .then(function (f) { out.forgot = f; report(out); });
      }]);`,
    });
    const [r] = sc.reports;
    const [decide] = sc.requests.filter((q) => q.path === '/v1/decide').map((q) => JSON.parse(q.body));
    assert.deepEqual([decide.visitorId, decide.visitorToken], ['old-visitor', 'tok.forged']); // stored ones are sent
    const asked = sc.requests.filter((q) => q.path.startsWith('/v1/me')).map((q) => [q.path, JSON.parse(q.body).visitorToken]);
    assert.deepEqual(asked, [['/v1/me', 'tok.forged'], ['/v1/me/forget', 'tok.forged']]);
    assert.equal(r.mine.stored, null);
    assert.equal(r.forgot, false);
    assert.deepEqual(r.storage, { 'tailor.vid': null, 'tailor.sid': null, 'tailor.profile': null, 'tailor.tok': null });
  });

  test('under a nonce Content-Security-Policy: the style hides the slots, myData imports its module', async () => {
    const sc = await run('csp', {
      nonce: 'r4nd0m',
      timeout: 5000,
      after: `tailor.push(["onDecision", function () {
        var out = { violations: [] };
        document.addEventListener("securitypolicyviolation", function (e) { out.violations.push(e.violatedDirective + " " + e.blockedURI); });
        var probe = document.createElement("script"); // no nonce: the policy must block it
        probe.textContent = "window.probeRan = 1";
        document.head.appendChild(probe);
        var late = document.createElement("div");
        late.setAttribute("data-tailor-slot", "later");
        document.body.appendChild(late);
        setTimeout(function () {
          out.hidden = getComputedStyle(late).visibility; // hidden by the tag's style, nonce and all
          out.probeRan = !!window.probeRan;
          tailor.myData().then(function (m) { out.mine = m; report(out); });
        });
      }]);`,
    });
    const [r] = sc.reports;
    assert.equal(r.hidden, 'hidden');
    assert.equal(r.mine.reasons.persona.id, 'deal_hunter');
    assert.deepEqual(tagFiles('csp'), ['/tag/v1/tailor.js', '/tag/v1/tailor-me.js']);
    // The policy is enforced (the test's own script without a nonce is blocked and reported);
    // besides it, only the hostile html's inline handlers and style may be reported (Chromium
    // may check them as DOMParser parses the decision: inert, they never run, and sanitize
    // drops them); neither the tag's style nor the module is blocked.
    assert.equal(r.probeRan, false, 'the policy is enforced');
    assert.ok(r.violations.some((v) => /^script-src-elem inline$/.test(v)), r.violations.join());
    assert.deepEqual(r.violations.filter((v) => !/^(script|style)-src-(attr|elem) inline$/.test(v)), []);
  });

  test('myData resolves to null when its module cannot be loaded; forget needs no module', async () => {
    const sc = await run('nomodule', {
      noModule: true,
      after: `tailor.push(["onDecision", function () {
        var out = {};
        tailor.myData().then(function (m) { out.mine = m; return tailor.forget(); })
          .then(function (f) { out.forgot = f; report(out); });
      }]);`,
    });
    const [r] = sc.reports;
    assert.equal(r.mine, null);
    assert.deepEqual(tagFiles('nomodule'), ['/tag/v1/tailor.js', '/tag/v1/tailor-me.js']); // tried, 404
    assert.equal(sc.requests.filter((q) => q.path === '/v1/me').length, 0);
    assert.equal(r.forgot, true); // erased on the server...
    assert.deepEqual(r.storage, { 'tailor.vid': null, 'tailor.sid': null, 'tailor.profile': null, 'tailor.tok': null }); // ...and here
  });

  test('hides only the slots, shows the defaults at the timeout, never applies a late decision', async () => {
    const sc = await run('timeout', {
      timeout: 300,
      delay: 1500,
      // 100 ms after the tag starts (it sets data-tailor-pending), and again after its timeout.
      before: `new MutationObserver(function (m, observer) {
        observer.disconnect();
        setTimeout(function () {
          var hero = document.querySelector("[data-tailor-slot=hero]");
          window.early = { hero: getComputedStyle(hero).visibility, body: getComputedStyle(document.body).visibility,
            pending: hero.hasAttribute("data-tailor-pending") };
        }, 100);
        setTimeout(function () {
          var hero = document.querySelector("[data-tailor-slot=hero]");
          window.atTimeout = { hero: getComputedStyle(hero).visibility, html: hero.innerHTML };
        }, 500);
      }).observe(document.documentElement, { attributeFilter: ["data-tailor-pending"] });`,
      after: `tailor.push(["onDecision", function (d, applied) {
        if (d.decisionId !== "dec_1") return;
        report({ early: window.early, atTimeout: window.atTimeout }).then(function () {
          return tailor.decide();
        }).then(function (d2) { report({ explicit: d2 && d2.decisionId }); });
      }]);`,
    }, 2);
    const [late, explicit] = sc.reports;
    assert.deepEqual(late.early, { hero: 'hidden', body: 'visible', pending: true });
    assert.deepEqual(late.atTimeout, { hero: 'visible', html: '<h1>Default hero</h1>' });
    assert.equal(late.pending, false);
    assert.deepEqual(late.slots.hero, { html: '<h1>Default hero</h1>', variant: null, decision: null });
    assert.deepEqual(late.decisions, [{ id: 'dec_1', applied: false }]);
    // tailor.decide() asked for by the page applies.
    assert.equal(explicit.explicit, 'dec_2');
    assert.equal(explicit.slots.hero.variant, 'hero-html');
    assert.deepEqual(explicit.decisions.at(-1), { id: 'dec_2', applied: true });
  });

  test('Global Privacy Control: no storage, stored data erased, no personal data sent', async () => {
    const sc = await run('gpc', {
      before: `Object.defineProperty(navigator, "globalPrivacyControl", { value: true });
        localStorage.setItem("tailor.vid", "old-visitor");
        localStorage.setItem("tailor.profile", '{"sessionCount":9}');`,
      after: `tailor.push(["onDecision", function () {
        tailor.setConsent({ personalization: true, storage: true }); // GPC still wins
        report();
      }]);`,
    });
    const [r] = sc.reports;
    assert.deepEqual(r.storage, { 'tailor.vid': null, 'tailor.sid': null, 'tailor.profile': null, 'tailor.tok': null });
    const body = JSON.parse(sc.requests.find((q) => q.path === '/v1/decide').body);
    assert.deepEqual(body.consent, { personalization: false, storage: false });
    assert.notEqual(body.visitorId, 'old-visitor');
    assert.match(body.visitorId, ID);
    assert.equal(body.userId, undefined);
    assert.deepEqual(body.behavior, {});
  });

  test('by default consent is pending: nothing read or stored, the decide request carries no id', async () => {
    const sc = await run('default', {
      consent: null, // no data-consent attribute
      before: `localStorage.setItem("tailor.vid", "stored-visitor");
        localStorage.setItem("tailor.sid", '{"id":"stored-session","t":' + Date.now() + '}');`,
      after: `tailor.push(["onDecision", function () { setTimeout(report, 1300); }]);`,
    });
    const [r] = sc.reports;
    // what was there stays untouched (pending neither reads nor erases), nothing was added
    assert.deepEqual(r.storage, { 'tailor.vid': 'stored-visitor', 'tailor.sid': r.storage['tailor.sid'], 'tailor.profile': null, 'tailor.tok': null });
    assert.match(r.storage['tailor.sid'], /stored-session/);
    const [body] = sc.requests.filter((q) => q.path === '/v1/decide').map((q) => JSON.parse(q.body));
    assert.deepEqual(body.consent, { personalization: false, storage: false });
    assert.notEqual(body.visitorId, 'stored-visitor'); // a throwaway id
    assert.equal(body.sessionId, undefined);
    assert.equal(body.userId, undefined);
    assert.deepEqual(body.behavior, {});
    assert.deepEqual(sc.requests.filter((q) => q.path === '/v1/events'), []); // queued, not sent
  });

  test('consent pending, then granted: stored from then on, a new visitor id', async () => {
    const sc = await run('pending', {
      consent: 'pending',
      after: `tailor.push(["onDecision", function (d) {
        if (d.decisionId !== "dec_1") return;
        var before = localStorage.getItem("tailor.vid");
        tailor.setConsent({ personalization: true, storage: true });
        tailor.decide().then(function () { report({ before: before }); });
      }]);`,
    });
    const [r] = sc.reports;
    const [first, second] = sc.requests.filter((q) => q.path === '/v1/decide').map((q) => JSON.parse(q.body));
    assert.equal(r.before, null);
    assert.deepEqual(first.consent, { personalization: false, storage: false });
    assert.deepEqual(second.consent, { personalization: true, storage: true });
    assert.notEqual(second.visitorId, first.visitorId); // the pending one was thrown away
    assert.equal(first.sessionId, undefined);
    assert.equal(second.visitorToken, undefined);
    assert.equal(r.storage['tailor.vid'], 'minted-dec_2'); // the server's id for it
    assert.equal(r.storage['tailor.tok'], 'tok.minted-dec_2');
    assert.equal(second.userId, 'user_42');
    assert.equal(second.behavior.pageViews, 1);
  });

  test('loaded with defer: slots hidden, filled, the queue replayed', async () => {
    const sc = await run('defer', {
      load: 'defer',
      before: `document.addEventListener("DOMContentLoaded", function () {
        window.atReady = { pending: document.querySelector("[data-tailor-slot=hero]").hasAttribute("data-tailor-pending") };
      });`,
      after: `tailor.push(["onDecision", function () { report({ atReady: window.atReady }); }]);`,
    });
    const [r] = sc.reports;
    assert.deepEqual(r.atReady, { pending: true });
    assert.deepEqual(r.decisions, [{ id: 'dec_1', applied: true }]);
    assert.equal(r.slots.hero.variant, 'hero-html');
    const body = JSON.parse(sc.requests.find((q) => q.path === '/v1/decide').body);
    assert.equal(body.userId, 'user_42'); // identify, queued before the tag ran
  });

  test('a failing API shows the defaults at once, before the timeout', async () => {
    const sc = await run('down', {
      status: 503,
      timeout: 5000,
      after: `setTimeout(report, 400);`,
    });
    const [r] = sc.reports;
    assert.equal(r.pending, false);
    assert.deepEqual(r.decisions, []);
    assert.deepEqual(r.slots.hero, { html: '<h1>Default hero</h1>', variant: null, decision: null });
  });

  test('events: batched with fetch keepalive, retried on 429 and 503 only, consent sent along', async () => {
    const sc = await run('retry', {
      eventStatus: [503, 429, 409, 403],
      after: `tailor.push(["onDecision", function () {
        tailor.track("conversion", { value: 5 });
        // The batch leaves after a second (503), again after ~1 s of backoff (429), again after
        // the 1 s Retry-After (409: refused, not sent again). A later batch answered 403 is not
        // sent again either.
        var wait = function () {
          var n = performance.getEntriesByType("resource").filter(function (e) { return e.name.indexOf("/v1/events") >= 0; }).length;
          if (n < 3) return setTimeout(wait, 50);
          tailor.track("dismiss", { slot: "hero" });
          setTimeout(function () { report(); }, 2500);
        };
        wait();
      }]);`,
    });
    const posts = sc.requests.filter((q) => q.path === '/v1/events').map((q) => JSON.parse(q.body));
    assert.equal(posts.length, 4, JSON.stringify(posts));
    const types = (b) => b.events.map((e) => e.type).sort().join(',');
    assert.equal(types(posts[0]), types(posts[1]));
    assert.equal(types(posts[0]), types(posts[2]));
    assert.ok(types(posts[0]).includes('conversion'), types(posts[0]));
    assert.equal(types(posts[3]), 'dismiss');
    assert.ok(posts.every((b) => b.consent.personalization === true && b.consent.storage === true));
    assert.ok(sc.requests.filter((q) => q.path === '/v1/events').every((q) => /^text\/plain/.test(q.type)));
  });

  test('consent pending: events wait; refused: they are dropped and none follow', async () => {
    const sc = await run('refuse', {
      consent: 'pending',
      after: `tailor.push(["onDecision", function () {
        tailor.track("conversion", { value: 5 });
        setTimeout(function () {
          window.queuedWhilePending = performance.getEntriesByType("resource").filter(function (e) { return e.name.indexOf("/v1/events") >= 0; }).length;
          tailor.setConsent({ personalization: false, storage: false });
          tailor.track("click", { slot: "hero" });
          dispatchEvent(new Event("pagehide"));
          setTimeout(function () { report({ queuedWhilePending: window.queuedWhilePending }); }, 1300);
        }, 1300);
      }]);`,
    });
    const [r] = sc.reports;
    assert.equal(r.queuedWhilePending, 0);
    assert.deepEqual(sc.requests.filter((q) => q.path === '/v1/events'), []);
    assert.deepEqual(r.storage, { 'tailor.vid': null, 'tailor.sid': null, 'tailor.profile': null, 'tailor.tok': null });
  });

  test('consent pending, then granted: the queued events leave with the new consent', async () => {
    const sc = await run('grant', {
      consent: 'pending',
      after: `tailor.push(["onDecision", function () {
        tailor.track("conversion", { value: 5 });
        setTimeout(function () {
          tailor.setConsent({ personalization: true, storage: false });
          setTimeout(report, 300);
        }, 1300);
      }]);`,
    });
    const posts = sc.requests.filter((q) => q.path === '/v1/events').map((q) => JSON.parse(q.body));
    assert.equal(posts.length, 1);
    assert.deepEqual(posts[0].consent, { personalization: true, storage: false });
    const types = posts[0].events.map((e) => e.type).filter((t) => t !== 'impression');
    assert.deepEqual(types.sort(), ['conversion', 'conversion', 'pageview']); // queued before the tag, and in the callback
    assert.deepEqual(sc.reports[0].storage, { 'tailor.vid': null, 'tailor.sid': null, 'tailor.profile': null, 'tailor.tok': null });
  });

  test('slots added later: covered ones filled from the decision, new ones decided, hidden meanwhile', async () => {
    const sc = await run('later', {
      after: `tailor.push(["onDecision", function (d) {
        if (d.decisionId !== "dec_1") return;
        var again = document.createElement("div");      // the same slot id, re-rendered
        again.setAttribute("data-tailor-slot", "banner");
        again.textContent = "Default banner, again";
        var fresh = document.createElement("section");  // a slot id the first decision lacks
        fresh.innerHTML = '<div data-tailor-slot="extra1">Default extra</div>';
        document.body.append(again, fresh);
        var hiddenAtOnce; // before the next paint: the MutationObserver's microtask ran first
        queueMicrotask(function () { hiddenAtOnce = getComputedStyle(fresh.firstChild).visibility; });
        tailor.push(["onDecision", function (d2) {
          if (d2.decisionId === "dec_2") report({ again: again.innerHTML, againDecision: again.dataset.tailorDecision,
            fresh: fresh.firstChild.innerHTML, freshDecision: fresh.firstChild.dataset.tailorDecision, hiddenAtOnce: hiddenAtOnce,
            pendingAfter: fresh.firstChild.hasAttribute("data-tailor-pending") });
        }]);
      }]);`,
    });
    const [r] = sc.reports;
    assert.equal(r.again, '&lt;b&gt;Free shipping&lt;/b&gt; today');
    assert.equal(r.againDecision, 'dec_1');
    assert.equal(r.hiddenAtOnce, 'hidden');
    assert.equal(r.fresh, 'for extra1');
    assert.equal(r.freshDecision, 'dec_2');
    assert.equal(r.pendingAfter, false);
    const second = JSON.parse(sc.requests.filter((q) => q.path === '/v1/decide')[1].body);
    assert.ok(second.slots.includes('extra1'), second.slots);
  });

  test('the demo page: same-origin endpoint, slots filled, debug panel from the decision', async () => {
    const reporter = `<script>
      tailor.push(["onDecision", function () {
        setTimeout(function () {
          var text = function (sel) { return document.querySelector(sel).textContent.trim(); };
          fetch("/s/demo/report", { method: "POST", body: JSON.stringify({
            hero: document.querySelector("[data-tailor-slot=hero]").innerHTML,
            banner: text("[data-tailor-slot=banner]"),
            pending: document.documentElement.hasAttribute("data-tailor-pending"),
            status: text("#d-status"), persona: text("#d-persona"), segment: text("#d-segment"),
            lifecycle: text("#d-lifecycle"), device: text("#d-device"), referrer: text("#d-referrer"),
            reasons: text("#d-reasons"), slots: text("#d-slots"), pwned: window.__pwned || null
          }) });
        }, 50);
      }]);
    </script></body>`;
    const html = readFileSync(new URL('demo.html', STATIC), 'utf8');
    assert.ok(!/\b(src|href)="(https?:)?\/\//.test(html), 'the demo loads nothing from elsewhere');
    const sc = await run('demo', { page: html.replace('</body>', reporter) }, 1, '?utm_source=newsletter&utm_medium=email&utm_campaign=spring');
    const [r] = sc.reports;
    const decide = sc.requests.find((q) => q.path === '/v1/decide');
    assert.equal(decide.query, '', 'the keyless loopback demo sends no key');
    const body = JSON.parse(decide.body);
    assert.deepEqual(body.slots, ['banner', 'hero', 'recommendation']);
    assert.deepEqual(body.context.campaign, { source: 'newsletter', medium: 'email', name: 'spring' });
    assert.deepEqual(body.behavior.categoriesViewed, ['electronics', 'audio', 'home']);
    assert.equal(r.pwned, null);
    assert.equal(r.pending, false);
    assert.ok(r.hero.startsWith('<h2>Spring <em>sale</em></h2>'), r.hero);
    assert.equal(r.banner, '<b>Free shipping</b> today');
    assert.equal(r.status, 'personalized');
    assert.equal(r.persona, 'Deal hunter (deal_hunter)');
    assert.equal(r.segment, '#3 · distance 0.420');
    assert.equal(r.lifecycle, 'returning · rule sessionCount >= 2');
    assert.equal(r.device, 'desktop · Linux · Chrome');
    assert.equal(r.referrer, 'email · newsletter');
    assert.equal(r.reasons, 'utm: campaign newsletter/email');
    assert.ok(r.slots.includes('hero → hero-html (spring-sale) · p=0.90 · persona:deal_hunter'), r.slots);
  });
});
