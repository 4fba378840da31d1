// A real OpenID provider (panva/oidc-provider) for pushgate's oidcauth
// integration tests. Test-only: fixed secrets, any login accepted, loopback
// only.
//
//   node server.js PORT        # PORT 0 picks a free one
//
// Once listening it prints one line to stdout:
//   {"issuer":"http://127.0.0.1:PORT"}
//
// Clients
//   pushgate-mobile   public native client (PKCE, no secret), authorization
//                     code flow; its ID tokens are signed RS256. The Go
//                     helpers drive the flow with devInteractions: GET /auth,
//                     POST /interaction/:uid with prompt=login&login=SUB,
//                     follow redirects to the redirect_uri, exchange the code.
//                     Consent is skipped by loadExistingGrant, the documented
//                     way to do that for first-party clients.
//   pushgate-backend  confidential client (secret "backend-secret") with the
//                     client_credentials grant. Pass resource=AUDIENCE to get
//                     an RFC 9068 JWT access token (typ at+jwt, aud AUDIENCE,
//                     signed ES256). Test-only extra form parameters:
//                       pushgate_test_sub  sets the token's sub (by default
//                                          oidc-provider uses the client id)
//                       pushgate_test_alg  ES256 (default) or RS256
//
// Admin (loopback, like everything else)
//   POST /__test/rotate   replace every signing key with fresh ES256 and
//                         RS256 keys; answers {"kids":[...]}. The old keys
//                         leave the JWKS at once.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node server.js PORT');
  process.exit(2);
}

function newKeys() {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  return [
    { ...ec, kid: `es-${randomUUID()}`, alg: 'ES256', use: 'sig' },
    { ...rsa, kid: `rs-${randomUUID()}`, alg: 'RS256', use: 'sig' },
  ];
}

function configuration(keys) {
  return {
    clients: [
      {
        client_id: 'pushgate-mobile',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        id_token_signed_response_alg: 'RS256',
      },
      {
        client_id: 'pushgate-backend',
        client_secret: 'backend-secret',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    jwks: { keys },
    cookies: { keys: ['pushgate-test-idp-cookie-key'] },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Without a resource parameter tokens stay opaque (userinfo only).
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, resourceIndicator) {
          const alg = ctx.oidc?.body?.pushgate_test_alg === 'RS256' ? 'RS256' : 'ES256';
          return {
            scope: 'push:register',
            audience: resourceIndicator,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    formats: {
      customizers: {
        jwt(ctx, token, jwt) {
          const sub = ctx?.oidc?.body?.pushgate_test_sub;
          if (token.kind === 'ClientCredentials' && typeof sub === 'string' && sub !== '') {
            jwt.payload.sub = sub;
          }
        },
      },
    },
    // Skip the consent prompt for our own mobile client, as the
    // oidc-provider docs recommend for first-party clients.
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      if (grantId) {
        return oidc.provider.Grant.find(grantId);
      }
      if (oidc.client.clientId !== 'pushgate-mobile') {
        return undefined;
      }
      const grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
      grant.addOIDCScope('openid');
      await grant.save();
      return grant;
    },
  };
}

let handler;
let issuer;

function install(keys) {
  const provider = new Provider(issuer, configuration(keys));
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  handler = provider.callback();
  return keys.map((k) => k.kid);
}

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/__test/rotate') {
    const kids = install(newKeys());
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kids }));
    return;
  }
  handler(req, res);
});

server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  install(newKeys());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// The Go test kills the process at cleanup; exit promptly on signals.
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
