"""Dashboard users, their sessions and failed sign-ins: the one writer of ``users``, ``user_sessions`` and
``login_failures``.

Passwords are hashed with argon2id (argon2-cffi, its default parameters). A session is a random token in the
browser's cookie; the store keeps only its SHA-256, with an expiry the server enforces, so signing out or
disabling a user ends it at once. Failed sign-ins are counted per user name and per client address over a
window; past the limit every attempt is refused (even a right password) until the window has passed.

>>> import tempfile
>>> from forewarn.state.db import open_store, upgrade
>>> url = f"sqlite:///{tempfile.mkdtemp()}/state.db"; upgrade(url); engine = open_store(url)
>>> create_user(engine, "ada", "agent", password="correct horse battery").role
'agent'
>>> user = authenticate(engine, "ada", "correct horse battery", address="127.0.0.1")
>>> token = start_session(engine, user, timedelta(hours=1), address="127.0.0.1")
>>> session_user(engine, token).username
'ada'
>>> end_session(engine, token); session_user(engine, token) is None
True
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, func, or_, select, update

from forewarn.state.db import transaction
from forewarn.state.models import LoginFailure, User, UserSession, utcnow

ROLES = ("viewer", "agent", "admin")  # each role may do everything the ones before it may
MIN_PASSWORD = 12
MAX_USERNAME = 128

_hasher = PasswordHasher()
# verified against when the user name is unknown, so that a wrong name takes as long as a wrong password
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class BadCredentials(ValueError):
    """Unknown user, wrong password or disabled user: deliberately one error, so names cannot be probed."""


class TooManyFailures(RuntimeError):
    """Too many failed sign-ins for this name or address; try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    role: str
    disabled: bool
    has_password: bool
    created_at: datetime
    last_login_at: datetime | None

    def may(self, role: str) -> bool:
        """Whether this user's role includes ``role``.

        >>> UserInfo(1, "a", "agent", False, True, utcnow(), None).may("viewer")
        True
        >>> UserInfo(1, "a", "agent", False, True, utcnow(), None).may("admin")
        False
        """
        return ROLES.index(self.role) >= ROLES.index(role)


def _info(u: User) -> UserInfo:
    return UserInfo(
        u.id, u.username, u.role, u.disabled, u.password_hash is not None, u.created_at, u.last_login_at
    )


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters (got {len(password)})")
    return password


def generate_password() -> str:
    """A random password (about 120 bits), for set-up and the demo."""
    return secrets.token_urlsafe(15)


def create_user(engine: Engine, username: str, role: str, *, password: str | None = None) -> UserInfo:
    """Add a user; ``password=None`` makes one who can only come through a trusted proxy header."""
    username = username.strip()
    if not username or len(username) > MAX_USERNAME:
        raise ValueError(f"a user name needs 1 to {MAX_USERNAME} characters")
    check_role(role)
    hashed = _hasher.hash(check_password(password)) if password is not None else None
    with transaction(engine) as s:
        if s.scalar(select(User.id).where(User.username == username)) is not None:
            raise ValueError(f"user {username!r} exists already")
        user = User(username=username, role=role, password_hash=hashed, disabled=False)
        s.add(user)
        s.flush()
        return _info(user)


def get_user(engine: Engine, username: str) -> UserInfo | None:
    with transaction(engine) as s:
        user = s.scalar(select(User).where(User.username == username))
        return _info(user) if user else None


def list_users(engine: Engine) -> list[UserInfo]:
    with transaction(engine) as s:
        return [_info(u) for u in s.scalars(select(User).order_by(User.username))]


def _change(engine: Engine, username: str, **values: object) -> UserInfo:
    with transaction(engine) as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise LookupError(f"no user {username!r}")
        for k, v in values.items():
            setattr(user, k, v)
        if values.get("disabled") or "password_hash" in values or "role" in values:
            # a disabled user, a new password or a new role: every open session starts again
            s.execute(delete(UserSession).where(UserSession.user_id == user.id))
        return _info(user)


def set_disabled(engine: Engine, username: str, disabled: bool = True) -> UserInfo:
    """Disable (or enable again) a user; disabling ends their sessions."""
    return _change(engine, username, disabled=disabled)


def set_role(engine: Engine, username: str, role: str) -> UserInfo:
    return _change(engine, username, role=check_role(role))


def set_password(engine: Engine, username: str, password: str) -> UserInfo:
    return _change(engine, username, password_hash=_hasher.hash(check_password(password)))


def authenticate(
    engine: Engine,
    username: str,
    password: str,
    *,
    address: str,
    max_per_user: int = 5,
    max_per_address: int = 20,
    window: timedelta = timedelta(minutes=15),
) -> UserInfo:
    """The user whose name and password these are; raises ``TooManyFailures`` or ``BadCredentials``."""
    username = username.strip()[:MAX_USERNAME]
    address = address[:64]
    now = utcnow()
    since = now - window
    with transaction(engine) as s:
        by_user, by_address, oldest = s.execute(
            select(
                func.count().filter(LoginFailure.username == username),
                func.count().filter(LoginFailure.address == address),
                func.min(LoginFailure.at),
            ).where(
                LoginFailure.at > since,
                or_(LoginFailure.username == username, LoginFailure.address == address),
            )
        ).one()
    if by_user >= max_per_user or by_address >= max_per_address:
        retry = int((oldest + window - now).total_seconds()) + 1 if oldest else int(window.total_seconds())
        raise TooManyFailures(max(retry, 1))
    with transaction(engine) as s:
        user = s.scalar(select(User).where(User.username == username))
        try:
            ok = _hasher.verify(user.password_hash if user and user.password_hash else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or user is None or user.password_hash is None or user.disabled:
            s.execute(delete(LoginFailure).where(LoginFailure.at < now - max(window, timedelta(days=1))))
            s.add(LoginFailure(username=username, address=address, at=now))
            raise_after = True
        else:
            raise_after = False
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            user.last_login_at = now
            s.execute(delete(LoginFailure).where(LoginFailure.username == username))
            info = _info(user)
    if raise_after:  # after the commit, so the failure is counted
        raise BadCredentials("unknown user name or wrong password")
    return info


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(engine: Engine, user: UserInfo, ttl: timedelta, *, address: str | None = None) -> str:
    """A new session for ``user``: the token for the browser's cookie (the store keeps only its hash)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with transaction(engine) as s:
        s.execute(delete(UserSession).where(UserSession.expires_at <= now))
        s.add(
            UserSession(
                token_hash=_digest(token),
                user_id=user.id,
                created_at=now,
                expires_at=now + ttl,
                address=(address or "")[:64] or None,
            )
        )
    return token


def session_user(engine: Engine, token: str) -> UserInfo | None:
    """The enabled user of an unexpired session, or None."""
    if not token or len(token) > 200:
        return None
    with transaction(engine) as s:
        user = s.scalar(
            select(User)
            .join(UserSession, UserSession.user_id == User.id)
            .where(
                UserSession.token_hash == _digest(token),
                UserSession.expires_at > utcnow(),
                User.disabled.is_(False),
            )
        )
        return _info(user) if user else None


def end_session(engine: Engine, token: str) -> None:
    with transaction(engine) as s:
        s.execute(delete(UserSession).where(UserSession.token_hash == _digest(token)))


def expire_sessions(engine: Engine, username: str) -> int:
    """End every session of ``username`` now (e.g. a lost laptop); returns how many there were."""
    with transaction(engine) as s:
        ids = select(User.id).where(User.username == username).scalar_subquery()
        res = s.execute(
            update(UserSession).where(UserSession.user_id == ids).values(expires_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
        return res.rowcount or 0
