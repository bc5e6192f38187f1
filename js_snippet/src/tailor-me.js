/**
 * The visitor's own data, tailor.myData(): most pages never ask for it, so the tag
 * (src/tailor.js) imports this module, built next to it (server/static/tailor-me.js), only on
 * the first call. import() fetches it with the fetch options of the script that calls it (so
 * with the tag's CSP nonce), in CORS mode (the server lets any origin load it).
 *
 * `myData(send, state, last, log)` is the whole interface between the two files; a cached tag
 * may import a newer module, so it changes only with the tag's URL (/tag/v1/).
 * Must import nothing but ./core.js: the tag has zero runtime dependencies.
 */
import { why } from './core.js';

/**
 * What is stored about the visitor, and why they see what they see. From the tag: `send(path,
 * body)` POSTs {visitorToken, ...body} to {endpoint}/v1/{path} (a Promise of the Response);
 * `state` is the visitor's state {vid, tok, profile, sid}; `last` the last decision (undefined
 * before any); `log(e)` reports an error when data-debug is set. The server is asked (POST
 * /v1/me) only with a token: `stored` is its answer, or null.
 */
export const myData = (send, state, last, log) =>
  Promise.resolve(state.tok && send('me').then((r) => r.ok && r.json(), log)).then((stored) => ({
    visitorId: state.vid,
    stored: stored || null,
    local: { profile: state.profile, session: state.sid },
    reasons: why(last),
  }));
