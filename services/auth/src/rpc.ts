import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthService } from "@thinmesh/contracts/shop/auth/v1/auth_pb.js";
import { bind, type ServiceBinding } from "@thinmesh/platform";
import type { Accounts, IssuedTokens, User } from "./domain/accounts.js";
import { LoginThrottled } from "./domain/login-throttle.js";

// Requests arrive validated against the proto's rules (the platform's interceptor), and
// domain errors become Connect codes in the platform, so the handlers only translate shapes.

const userMessage = (user: User) => ({
  id: user.id,
  email: user.email,
  roles: user.roles,
  createTime: timestampFromDate(user.createdAt),
});

const tokensMessage = (tokens: IssuedTokens) => ({
  accessToken: tokens.accessToken,
  tokenType: tokens.tokenType,
  expiresIn: tokens.expiresIn,
  refreshToken: tokens.refreshToken,
  refreshExpireTime: timestampFromDate(tokens.refreshExpiresAt),
});

/**
 * resource_exhausted (HTTP 429 in Connect) with when to retry, in the message and as
 * retry-after (seconds, as in HTTP): the one domain error the platform's mapping has no code
 * for. The mesh does not retry it (Envoy's retry policies here do not name 429).
 */
function throttled(error: unknown): unknown {
  if (!(error instanceof LoginThrottled)) return error;
  return new ConnectError(error.message, Code.ResourceExhausted, {
    "retry-after": String(error.retryAfterSeconds),
  });
}

export function authRpc(accounts: Accounts): ServiceBinding {
  return bind(
    AuthService,
    {
      async register({ email, password }) {
        return { user: userMessage(await accounts.register(email, password)) };
      },
      async login({ email, password }) {
        const { user, tokens } = await accounts.login(email, password).catch((error) => {
          throw throttled(error);
        });
        return { user: userMessage(user), tokens: tokensMessage(tokens) };
      },
      async refresh({ refreshToken }) {
        return { tokens: tokensMessage(await accounts.refresh(refreshToken)) };
      },
    },
    { register: "public", login: "public", refresh: "public" },
  );
}
