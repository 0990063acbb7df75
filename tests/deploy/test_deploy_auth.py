"""Access control in the chart: JWT required for inference via Istio, and nothing secret rendered."""

from __future__ import annotations

from deploy_support import check_object, model

ISSUER = "https://accounts.example.com"
AUTH = {
    "enabled": True,
    "issuer": ISSUER,
    "jwksUri": f"{ISSUER}/.well-known/jwks.json",
    "audiences": ["maas"],
    "requiredClaims": {"groups": ["ml-users", "ml-admins"]},
}


def test_auth_requires_a_token_from_the_issuer_except_on_public_paths(render):
    rendered = render({"models": [model("resnet"), model("lstm", "sequence")], "auth": AUTH})
    (authn,) = rendered.of_kind("RequestAuthentication")
    (authz,) = rendered.of_kind("AuthorizationPolicy")
    for obj in (authn, authz):
        check_object(obj)
        (expr,) = obj["spec"]["selector"]["matchExpressions"]
        assert expr == {"key": "serving.kserve.io/inferenceservice", "operator": "In", "values": ["resnet", "lstm"]}
    (rule,) = authn["spec"]["jwtRules"]
    assert rule["issuer"] == ISSUER and rule["jwksUri"].startswith("https://") and rule["audiences"] == ["maas"]
    assert authz["spec"]["action"] == "ALLOW"
    public, authenticated = authz["spec"]["rules"]
    paths = public["to"][0]["operation"]["paths"]
    assert "/v2/health/ready" in paths and "*/ready" in paths and "/metrics" in paths
    assert not any("infer" in p or "predict" in p for p in paths), "inference must never be public"
    assert "from" not in public and "when" not in public
    assert authenticated["from"] == [{"source": {"requestPrincipals": [f"{ISSUER}/*"]}}]
    assert authenticated["when"] == [{"key": "request.auth.claims[groups]", "values": ["ml-users", "ml-admins"]}]


def test_auth_is_off_by_default(render):
    rendered = render({"models": [model("resnet")]})
    assert not rendered.of_kind("RequestAuthentication") and not rendered.of_kind("AuthorizationPolicy")


def test_nothing_secret_is_rendered_into_plain_values(render):
    everything = {
        "models": [model("resnet", gpu={"count": 1}), model("bert", "transformer", deploymentMode="Knative")],
        "auth": AUTH,
        "controller": {"enabled": True},
        "imagePullSecrets": [{"name": "regcred"}],
    }
    rendered = render(everything)
    assert not rendered.of_kind("Secret")
    suspicious = ("SECRET", "PASSWORD", "TOKEN", "KEY", "CREDENTIAL")
    for obj in rendered.objects:
        for env in _envs(obj):
            if any(word in env["name"].upper() for word in suspicious):
                assert "value" not in env, f"{obj['kind']}/{obj['metadata']['name']}: {env['name']} is a literal"


def _envs(node):  # type: ignore[no-untyped-def]
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from _envs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _envs(item)
