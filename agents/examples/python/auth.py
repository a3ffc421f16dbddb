#!/usr/bin/env python3
"""Auth: issues and verifies tokens. Two incompatible versions.

  POST /token   {"user": "alice"}   -> 200 {"token": "...", "version": "v1", "expiresIn": 300}
  POST /verify  {"token": "..."}    -> 200 {"valid": true, "subject": "alice", "version": "v1"}
                                       401 invalid_token | bad_signature | token_expired
                                       409 token_version_mismatch (a token of the other version)
  GET  /healthz

v1 tokens:  T1.<user, base64url>.<issued-at, unix s>.<HMAC-SHA1 hex of "T1|user|iat">
v2 tokens:  v2~<claims JSON {"sub","iat","exp","jti"}, base64url>~<HMAC-SHA256 of it, base64url>

Each version has its own key and verifies only its own format, so a transaction whose token
was issued by one version and verified by the other fails (the failure a
version-consistent upgrade prevents). Tokens carry no instance state: every replica of a
version verifies every token of that version.

Run: PORT=9001 python3 auth.py --version v1   (or SERVICE_VERSION=v2)
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import time

import common

SERVICE = "auth"
TTL_S = 300
# Demonstration keys; AUTH_SECRET_V1 / AUTH_SECRET_V2 override them.
KEYS = {
    "v1": os.environ.get("AUTH_SECRET_V1", "triad-example-auth-v1-key").encode(),
    "v2": os.environ.get("AUTH_SECRET_V2", "triad-example-auth-v2-key").encode(),
}


def b64e(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_format(token):
    """Which version's format a token has: "v1", "v2" or None."""
    if token.startswith("T1.") and token.count(".") == 3:
        return "v1"
    if token.startswith("v2~") and token.count("~") == 2:
        return "v2"
    return None


class Rejected(Exception):
    def __init__(self, status, error, detail):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


# -- v1 -------------------------------------------------------------------------------------

def _v1_sig(user, iat):
    return hmac.new(KEYS["v1"], ("T1|%s|%d" % (user, iat)).encode(), hashlib.sha1).hexdigest()


def issue_v1(user):
    iat = int(time.time())
    return "T1.%s.%d.%s" % (b64e(user.encode()), iat, _v1_sig(user, iat))


def verify_v1(token):
    _, user_b64, iat_text, sig = token.split(".")
    try:
        user, iat = b64d(user_b64).decode(), int(iat_text)
    except ValueError:
        raise Rejected(401, "invalid_token", "malformed v1 token")
    if not hmac.compare_digest(sig, _v1_sig(user, iat)):
        raise Rejected(401, "bad_signature", "v1 token signature does not verify")
    if time.time() > iat + TTL_S:
        raise Rejected(401, "token_expired", "v1 token expired")
    return user


# -- v2 -------------------------------------------------------------------------------------

def _v2_sig(claims_b64):
    return b64e(hmac.new(KEYS["v2"], claims_b64.encode(), hashlib.sha256).digest())


def issue_v2(user):
    iat = int(time.time())
    claims = {"sub": user, "iat": iat, "exp": iat + TTL_S, "jti": secrets.token_hex(8)}
    claims_b64 = b64e(json.dumps(claims, separators=(",", ":")).encode())
    return "v2~%s~%s" % (claims_b64, _v2_sig(claims_b64))


def verify_v2(token):
    _, claims_b64, sig = token.split("~")
    if not hmac.compare_digest(sig, _v2_sig(claims_b64)):
        raise Rejected(401, "bad_signature", "v2 token signature does not verify")
    try:
        claims = json.loads(b64d(claims_b64))
        user, exp = claims["sub"], claims["exp"]
    except (ValueError, KeyError, TypeError):
        raise Rejected(401, "invalid_token", "malformed v2 token claims")
    if time.time() > exp:
        raise Rejected(401, "token_expired", "v2 token expired")
    return user


ISSUE = {"v1": issue_v1, "v2": issue_v2}
VERIFY = {"v1": verify_v1, "v2": verify_v2}


def make_app(version):
    def app(req):
        if req.path == "/healthz" and req.method == "GET":
            return common.health(SERVICE, version)
        if req.path == "/token" and req.method == "POST":
            body = req.json()
            user = body.get("user", "guest")
            if not isinstance(user, str) or not common.USER_RE.match(user):
                raise common.BadRequest("user must match [A-Za-z0-9._@-]{1,64}")
            return common.Response(200, {"token": ISSUE[version](user), "version": version,
                                         "expiresIn": TTL_S})
        if req.path == "/verify" and req.method == "POST":
            token = req.json().get("token")
            if token is None:
                auth = req.header("Authorization") or ""
                token = auth[7:] if auth.startswith("Bearer ") else None
            if not isinstance(token, str) or not token:
                return common.error_response(401, "missing_token", "no token to verify",
                                             version=version)
            fmt = token_format(token) if token.isascii() else None
            try:
                if fmt is None:
                    raise Rejected(401, "invalid_token", "not a token of any auth version")
                if fmt != version:
                    raise Rejected(
                        409, "token_version_mismatch",
                        "auth-%s cannot verify a token issued by auth-%s: the transaction "
                        "used two versions of auth" % (version, fmt))
                user = VERIFY[version](token)
            except Rejected as r:
                return common.error_response(r.status, r.error, r.detail, version=version,
                                             tokenVersion=fmt)
            return common.Response(200, {"valid": True, "subject": user, "version": version})
        return common.not_found(req)

    return app


def main():
    args = common.parse_args(SERVICE, "Auth: issues and verifies tokens.", versions=["v1", "v2"])
    common.serve(SERVICE, args, make_app(args.version))


if __name__ == "__main__":
    main()
