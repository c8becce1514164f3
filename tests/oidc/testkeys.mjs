// Keys the tests control, for tokens a real provider will not issue (expired, wrong audience,
// other algorithms, HS256 signed with an RSA public key...).
//
//   node testkeys.mjs
//
// Listens on a free 127.0.0.1 port and prints `listening <port>`. Endpoints:
//   GET  /jwks            the public keys (RSA `rsa-a` for RS*/PS*, EC P-256 `ec-a`, EC P-384
//                         `ec384-a`, Ed25519 `ed-a`); 503 while down
//   POST /sign            {"alg", "kid", "claims", "typ"?, "secret"?, "signWith"?} -> the
//                         compact JWS; `secret` signs HS* with those bytes (e.g. an RSA public
//                         key's PEM); `signWith` signs with another key than the header's kid
//   GET  /pem?kid=rsa-a   a public key as PEM
//   POST /control         {"down": bool} | {"rotate": "<suffix>"} (adds a key set with that suffix)
//   GET  /__stats         {"jwks": <fetches>}
import http from 'node:http';
import crypto from 'node:crypto';
import * as jose from 'jose';

const keys = new Map();
const order = [];
let down = false;
let fetches = 0;

function addSet(suffix) {
  const specs = [
    [`rsa-${suffix}`, 'rsa', { modulusLength: 2048 }],
    [`ec-${suffix}`, 'ec', { namedCurve: 'P-256' }],
    [`ec384-${suffix}`, 'ec', { namedCurve: 'P-384' }],
    [`ed-${suffix}`, 'ed25519', {}],
  ];
  for (const [kid, type, options] of specs) {
    keys.set(kid, crypto.generateKeyPairSync(type, options));
    order.push(kid);
  }
}
addSet('a');

function jwks() {
  return {
    keys: order.map((kid) => ({
      ...keys.get(kid).publicKey.export({ format: 'jwk' }),
      kid,
      use: 'sig',
    })),
  };
}

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString() || '{}');
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const send = (status, value, type = 'application/json') => {
    res.writeHead(status, { 'content-type': type });
    res.end(typeof value === 'string' ? value : JSON.stringify(value));
  };
  try {
    if (url.pathname === '/jwks') {
      fetches += 1;
      return down ? send(503, { error: 'down' }) : send(200, jwks());
    }
    if (url.pathname === '/__stats') return send(200, { jwks: fetches });
    if (url.pathname === '/pem') {
      const pair = keys.get(url.searchParams.get('kid'));
      return send(200, pair.publicKey.export({ format: 'pem', type: 'spki' }), 'text/plain');
    }
    if (url.pathname === '/control') {
      const b = await body(req);
      if (typeof b.down === 'boolean') down = b.down;
      if (b.rotate) addSet(b.rotate);
      return send(200, { down, kids: order });
    }
    if (url.pathname === '/sign') {
      const b = await body(req);
      const header = { alg: b.alg, typ: b.typ || 'JWT' };
      if (b.kid) header.kid = b.kid;
      const key = b.secret !== undefined
        ? new TextEncoder().encode(b.secret)
        : keys.get(b.signWith || b.kid).privateKey;
      const token = await new jose.SignJWT(b.claims).setProtectedHeader(header).sign(key);
      return send(200, token, 'text/plain');
    }
    send(404, { error: 'not found' });
  } catch (e) {
    send(500, { error: String(e) });
  }
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
