// A local OpenID provider for trying "Sign in with …" by hand (`just oidc-mock`): npm
// `oauth2-mock-server` on http://localhost:9400 (its authorize endpoint signs the user in at once),
// with the claims a login needs added to every ID token. Development only: it accepts any client.
//
//   OIDC_MOCK_EMAIL  the e-mail it asserts (default dev.user@example.com, verified)
//   OIDC_MOCK_SUB    the subject (default dev-user-1)
import { OAuth2Server } from "oauth2-mock-server";

const port = Number(process.env.OIDC_MOCK_PORT || 9400);
const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");
server.service.on("beforeTokenSigning", (token) => {
  token.payload.sub = process.env.OIDC_MOCK_SUB || "dev-user-1";
  token.payload.email = process.env.OIDC_MOCK_EMAIL || "dev.user@example.com";
  token.payload.email_verified = true;
  token.payload.name = "Dev User";
});
await server.start(port, "localhost");
console.log(`OpenID mock provider: issuer ${server.issuer.url}`);
