// A real, certified OpenID Provider (npm `oidc-provider`) for the integration tests.
//
//   node provider.mjs [port] [key-generation] [introspection-delay-ms]
//
// Listens on 127.0.0.1:<port> (0: any free port) with issuer http://127.0.0.1:<port> and prints
// `listening <port>` once ready. Client credentials grant; JWT access tokens through resource
// indicators (urn:orders:rs -> RS256, urn:orders:es -> ES256, both audience `orders`;
// urn:billing -> RS256, audience `billing`); opaque access tokens when no resource is asked for;
// introspection and revocation. Signing keys (RSA and EC P-256) are generated at start, with kids
// `rsa-<generation>` and `ec-<generation>`: restarting with another generation rotates them.
// GET /__stats answers how many requests each path received. A delay slows introspection down,
// so tests can have many requests wait for one answer.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const wantedPort = Number(process.argv[2] || 0);
const generation = process.argv[3] || '1';
const introspectionDelayMs = Number(process.argv[4] || 0);

function jwk(type, options, kid, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const keys = [
  jwk('rsa', { modulusLength: 2048 }, `rsa-${generation}`, 'RS256'),
  jwk('ec', { namedCurve: 'P-256' }, `ec-${generation}`, 'ES256'),
];

const resources = {
  'urn:orders:rs': { alg: 'RS256', audience: 'orders' },
  'urn:orders:es': { alg: 'ES256', audience: 'orders' },
  'urn:billing': { alg: 'RS256', audience: 'billing' },
};

const clients = [
  ['orders-client', 'orders-secret', 'orders:read orders:write'],
  ['reader-client', 'reader-secret', 'orders:read'],
  ['introspector', 'introspector-secret', ''],
].map(([client_id, client_secret, scope]) => ({
  client_id,
  client_secret,
  ...(scope ? { scope } : {}),
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
}));

const counts = {};
const server = http.createServer();
// Envoy pools connections to the provider: keep idle ones open longer than a test runs.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.listen(wantedPort, '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients,
    jwks: { keys },
    scopes: ['orders:read', 'orders:write'],
    clientDefaults: { grant_types: ['client_credentials'], response_types: [] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, indicator) => {
          const r = resources[indicator];
          if (!r) throw new errors.InvalidTarget();
          return {
            scope: 'orders:read orders:write',
            audience: r.audience,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: r.alg } },
          };
        },
      },
    },
  });
  const handle = provider.callback();
  server.on('request', (req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/__stats') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(counts));
      return;
    }
    counts[path] = (counts[path] || 0) + 1;
    if (path === '/token/introspection' && introspectionDelayMs > 0) {
      setTimeout(() => handle(req, res), introspectionDelayMs);
    } else {
      handle(req, res);
    }
  });
  console.log(`listening ${port}`);
});
