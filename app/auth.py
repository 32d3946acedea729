"""Who is calling: ``Authorization: Bearer <key>`` → :class:`Principal`.

With auth not required (the zero-setup default, bound to 127.0.0.1) a request without a key
acts as the built-in ``local`` owner. A key that is sent is always checked.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized
from app.http.deps import SessionDep
from app.logs import bind
from app.services.owners.keys import Principal, authenticate

LOCAL_OWNER = "local"

bearer = HTTPBearer(auto_error=False, description="An API key made with `tsm-server keys create OWNER`.")


async def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    header = request.headers.get("authorization")
    if header is None:
        if request.app.state.settings.auth_required:
            raise Unauthorized()
        bind(owner=LOCAL_OWNER)
        return Principal(owner=LOCAL_OWNER)
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("Malformed Authorization header: expected `Bearer <key>`.")
    principal = await authenticate(session, credentials.credentials.strip())
    if principal is None:
        raise Unauthorized("Invalid or revoked API key.")
    bind(owner=principal.owner)  # the rest of this request's log lines name the owner
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
