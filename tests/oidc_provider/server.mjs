// A real OpenID Connect provider (oidc-provider) laid out like Keycloak, for the tests and the benchmark.
//
// Usage: node server.mjs CONFIG.json
// Listens on 127.0.0.1 (CONFIG.port, 0 for any free port) and prints one line `{"ready": true, "port": N}`.
//
// Every realm in CONFIG.realms is an oidc-provider instance with issuer http://127.0.0.1:N/realms/<realm>,
// endpoints at Keycloak's paths (/protocol/openid-connect/{auth,token,userinfo,certs,logout}) and the same
// signing keys, clients and users: a token of one realm is validly signed but has the wrong issuer for another.
// A node:http front server strips /realms/<realm> and hands the request to that realm's provider, which
// still builds its URLs with the prefix (it reads req.originalUrl).
//
// Test endpoints on the front server (never part of a real provider):
//   POST /__test__/users   {username, password, email?, realmRoles?, clientRoles?}: add or replace a user
//                          (a replaced user keeps its sub, as a Keycloak user whose roles change)
//   POST /__test__/clients {client metadata, audience?, accessTokenTTL?, serviceAccount?}: add or replace a client
//   POST /__test__/rotate  a new signing key, first in the JWKS (the old one stays published); answers {kid}
//   GET  /__test__/stats   {"requests": {path: count}} for every request that reached a realm
//
// Introspection (RFC 7662) and revocation (RFC 7009) of access tokens are answered by the front server as
// Keycloak answers them: oidc-provider refuses both for JWT access tokens, which Keycloak introspects and revokes.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const APP_CLIENT = config.appClientId;
const users = new Map();
const requests = {};
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];
let signingKeys = [newSigningKey()];
let providers = new Map();

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
}

function putUser(user) {
  users.set(user.username, {
    sub: users.get(user.username)?.sub || crypto.randomUUID(),
    email: user.email,
    realmRoles: user.realmRoles || [],
    clientRoles: user.clientRoles || [],
    ...user,
  });
}

function userBySub(sub) {
  return [...users.values()].find((user) => user.sub === sub);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// The claims Keycloak's default mappers put in an access token.
function keycloakClaims(subject, clientId) {
  const claims = {
    azp: clientId,
    typ: 'Bearer',
    preferred_username: subject.username,
    realm_access: { roles: subject.realmRoles },
    resource_access: { [APP_CLIENT]: { roles: subject.clientRoles } },
  };
  if (subject.email) {
    claims.email = subject.email;
  }
  return claims;
}

function serviceAccountOf(clientId) {
  const client = config.clients.find((c) => c.client_id === clientId);
  const account = client?.serviceAccount;
  return account && { username: `service-account-${clientId}`, realmRoles: [], clientRoles: [], ...account };
}

function providerConfiguration() {
  return {
    clients: config.clients.map(({ serviceAccount, accessTokenTTL, audience, ...metadata }) => metadata),
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    pkce: { required: () => false },
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username', 'name', 'given_name', 'family_name'],
    },
    routes: {
      authorization: '/protocol/openid-connect/auth',
      token: '/protocol/openid-connect/token',
      userinfo: '/protocol/openid-connect/userinfo',
      jwks: '/protocol/openid-connect/certs',
      end_session: '/protocol/openid-connect/logout',
      revocation: '/protocol/openid-connect/revoke',
      introspection: '/protocol/openid-connect/token/introspect',
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => {
          const settings = config.clients.find((c) => c.client_id === client.clientId) || {};
          return {
            scope: 'openid email profile',
            audience: settings.audience || APP_CLIENT,
            accessTokenTTL: settings.accessTokenTTL || 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // oidc-provider takes one audience per resource server; Keycloak adds its `account` client to most tokens.
    formats: {
      customizers: {
        jwt: (ctx, token, jwt) => {
          jwt.payload.aud = [...new Set([jwt.payload.aud, 'account'].flat())];
        },
      },
    },
    extraTokenClaims: (ctx, token) => {
      const subject = token.accountId ? userBySub(token.accountId) : serviceAccountOf(token.clientId);
      return subject ? keycloakClaims(subject, token.clientId) : {};
    },
    findAccount: (ctx, sub) => {
      const user = userBySub(sub);
      if (!user) {
        return undefined;
      }
      return {
        accountId: sub,
        claims: () => ({
          sub,
          email: user.email,
          email_verified: Boolean(user.email),
          preferred_username: user.username,
          name: user.name || user.username,
        }),
      };
    },
    // The app is a first-party client, as in Keycloak with consent off: grant what it asks for, no consent page.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      const grant = grantId
        ? await ctx.oidc.provider.Grant.find(grantId)
        : new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid email profile');
      grant.addResourceScope(config.resource, 'openid email profile');
      await grant.save();
      return grant;
    },
    interactions: {
      url: (ctx, interaction) => `${new URL(ctx.oidc.issuer).pathname}/login-actions/${interaction.uid}`,
    },
    ttl: {
      Session: 3600,
      Interaction: 600,
      Grant: 3600,
      IdToken: 300,
      AuthorizationCode: 60,
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || 300,
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL || 300,
    },
  };
}

async function logoutSource(ctx, form) {
  ctx.body = `<!DOCTYPE html><html><head><title>Logging out</title></head><body>
    <h1>Do you want to log out?</h1>${form}
    <button id="kc-logout" type="submit" form="op.logoutForm" name="logout" value="yes">Logout</button>
    <script>document.getElementById('kc-logout').click();</script></body></html>`;
}

function buildProviders() {
  const port = server.address().port;
  providers = new Map(
    config.realms.map((realm) => {
      const provider = new Provider(`http://127.0.0.1:${port}/realms/${realm}`, providerConfiguration());
      provider.on('server_error', (ctx, error) => process.stderr.write(`${error.stack}\n`));
      return [realm, { provider, callback: provider.callback() }];
    }),
  );
}

function loginPage(action, message) {
  const error = message ? `<span id="input-error" class="kc-feedback-text">${escapeHtml(message)}</span>` : '';
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign in</title></head><body>
    <h1 id="kc-page-title">Sign in to your account</h1>${error}
    <form id="kc-form-login" action="${escapeHtml(action)}" method="post">
      <label for="username">Username</label><input id="username" name="username" type="text" autofocus>
      <label for="password">Password</label><input id="password" name="password" type="password">
      <input id="kc-login" name="login" type="submit" value="Sign In">
    </form></body></html>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function handleLogin(provider, req, res) {
  await provider.interactionDetails(req, res);
  const action = req.originalUrl.split('?')[0];
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(loginPage(action));
    return;
  }
  const form = await readForm(req);
  const user = users.get(form.get('username') || '');
  const password = Buffer.from(form.get('password') || '');
  const expected = Buffer.from(user?.password || '');
  if (!user || password.length !== expected.length || !crypto.timingSafeEqual(password, expected)) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(loginPage(action, 'Invalid username or password.'));
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
}

const revoked = new Set(); // the jti of every revoked access token

// The client a token request authenticates as (client_secret_basic or client_secret_post), if its secret matches.
function authenticatedClient(req, form) {
  let id = form.get('client_id');
  let secret = form.get('client_secret');
  const header = req.headers.authorization || '';
  if (header.startsWith('Basic ')) {
    const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    id = decodeURIComponent(decoded.slice(0, colon));
    secret = decodeURIComponent(decoded.slice(colon + 1));
  }
  const client = config.clients.find((c) => c.client_id === id);
  return client?.client_secret && secret === client.client_secret ? client : undefined;
}

// The claims of an access token this realm signed, or undefined.
function verifiedClaims(token, issuer) {
  const parts = String(token || '').split('.');
  if (parts.length !== 3) {
    return undefined;
  }
  let header;
  let payload;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  const jwk = signingKeys.find((key) => key.kid === header.kid);
  if (!jwk || header.alg !== 'RS256') {
    return undefined;
  }
  const { kty, n, e } = jwk;
  const key = crypto.createPublicKey({ key: { kty, n, e }, format: 'jwk' });
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  const valid = crypto.verify('RSA-SHA256', signed, key, Buffer.from(parts[2], 'base64url'));
  return valid && payload.iss === issuer ? payload : undefined;
}

async function handleTokenStatus(req, res, realm, action) {
  const form = await readForm(req);
  const client = authenticatedClient(req, form);
  if (!client) {
    return sendJson(res, 401, { error: 'invalid_client' });
  }
  const claims = verifiedClaims(form.get('token'), `http://127.0.0.1:${server.address().port}/realms/${realm}`);
  if (action === 'revoke') {
    if (claims && claims.client_id !== client.client_id && claims.azp !== client.client_id) {
      return sendJson(res, 400, { error: 'unauthorized_client' });
    }
    if (claims?.jti) {
      revoked.add(claims.jti);
    }
    res.writeHead(200);
    return res.end();
  }
  const active = Boolean(claims && claims.exp > Date.now() / 1000 && !revoked.has(claims.jti));
  return sendJson(res, 200, active ? { ...claims, active: true, token_type: 'Bearer' } : { active: false });
}

async function handleTest(req, res, path) {
  if (req.method === 'POST' && path === '/__test__/users') {
    putUser(await readJson(req));
    return sendJson(res, 200, { ok: true });
  }
  if (req.method === 'POST' && path === '/__test__/clients') {
    const client = await readJson(req);
    config.clients = [...config.clients.filter((c) => c.client_id !== client.client_id), client];
    buildProviders();
    return sendJson(res, 200, { ok: true });
  }
  if (req.method === 'POST' && path === '/__test__/rotate') {
    signingKeys = [newSigningKey(), ...signingKeys];
    buildProviders();
    return sendJson(res, 200, { kid: signingKeys[0].kid });
  }
  if (req.method === 'GET' && path === '/__test__/stats') {
    return sendJson(res, 200, { requests });
  }
  return sendJson(res, 404, { error: 'not_found' });
}

async function handle(req, res) {
  const path = req.url.split('?')[0];
  if (path.startsWith('/__test__/')) {
    return handleTest(req, res, path);
  }
  requests[path] = (requests[path] || 0) + 1;
  const match = /^\/realms\/([^/]+)(\/.*)?$/.exec(req.url);
  const realm = match && providers.get(match[1]);
  if (!realm) {
    return sendJson(res, 404, { error: 'Realm not found.' });
  }
  req.originalUrl = req.url;
  req.url = match[2] || '/';
  if (req.url.startsWith('/login-actions/')) {
    return handleLogin(realm.provider, req, res);
  }
  if (req.method === 'POST' && req.url === '/protocol/openid-connect/token/introspect') {
    return handleTokenStatus(req, res, match[1], 'introspect');
  }
  if (req.method === 'POST' && req.url === '/protocol/openid-connect/revoke') {
    return handleTokenStatus(req, res, match[1], 'revoke');
  }
  return realm.callback(req, res);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((error) => {
    if (!res.headersSent) {
      sendJson(res, 500, { error: 'server_error', message: String(error?.message || error) });
    }
  });
});

for (const user of config.users) {
  putUser(user);
}

server.listen(config.port || 0, '127.0.0.1', () => {
  buildProviders();
  process.stdout.write(`${JSON.stringify({ ready: true, port: server.address().port })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
