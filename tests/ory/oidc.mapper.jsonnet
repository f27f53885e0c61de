// Maps Hydra's ID token claims to the identity traits (pattern of Kratos's own e2e profile,
// test/e2e/profiles/oidc/hydra.jsonnet at v1.3.1).
local claims = std.extVar('claims');
{
  identity: {
    traits: {
      email: if std.objectHas(claims, 'email') then claims.email else claims.sub,
    },
  },
}
