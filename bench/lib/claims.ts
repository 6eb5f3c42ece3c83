/**
 * ID-token claims shaped like what a real provider (Keycloak, Entra ID, Okta, Auth0 with
 * the usual scopes) sends for a workforce user: profile, email, picture, locale, groups
 * and roles, tenant, authentication context. With them the sealed cookie-store cookie is
 * 2.5–3.5 KB, as in production, not the ~1.5 KB of the test provider's minimal ID token.
 * The provider adds iss, aud, sub, iat, exp, auth_time, sid (and at_hash, nonce) itself.
 */
export const realisticClaims: Record<string, unknown> = {
  name: 'Jane Q. Doe-Example',
  given_name: 'Jane',
  family_name: 'Doe-Example',
  preferred_username: 'jane.doe',
  email: 'jane.doe@corp.example.com',
  email_verified: true,
  picture: 'https://cdn.example.com/avatars/8f14e45f-ceea-467f/256.png',
  locale: 'en-GB',
  zoneinfo: 'Europe/London',
  updated_at: 1764633600,
  groups: ['/engineering', '/engineering/platform', '/all-staff', '/oncall'],
  roles: ['orders:read', 'orders:write', 'invoices:read'],
  tenant: 'f3c2a8e1-7b4d-4c9a-9e2f-5d6a1b0c8e77',
  // oidc-provider sets acr, amr, auth_time and sid itself (from the login), and only when
  // the client asks for them: these two are dropped by the bench provider; the synthetic
  // sessions of the production phase add a provider sid (bench/lib/records.ts).
  acr: 'urn:example:acr:loa2',
  amr: ['pwd', 'otp'],
};
