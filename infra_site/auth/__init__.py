"""Sign-in through Keycloak (OpenID Connect) for the admin, bearer tokens for the API, and role sync.

``provider`` finds the realm's endpoints, ``jwks`` caches its signing keys, ``tokens`` validates ID and
access tokens, ``services`` maps a token's subject and roles onto a Django user, ``backends`` and
``authentication`` plug that into Django's login and DRF, and ``views`` serve the admin login and logout.
"""
