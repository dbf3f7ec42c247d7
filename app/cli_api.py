"""`kinde-credits token`: mint an access token signed by the local key (local mode only).

It lets anyone try the API without a Kinde account: the token has Kinde's shape (RS256, kid,
iss, aud list, scp/scope, gty for M2M) and is verified by the very same code as a real one.
With KINDE_DOMAIN set, tokens must come from Kinde, so the command refuses.
"""

from __future__ import annotations

import click

from app.domain.principal import SCOPE_LEVELS

MAX_TTL = 30 * 24 * 3600


def register(main: click.Group) -> None:
    main.add_command(token)


@click.command()
@click.option("--sub", help="subject: a Kinde user id (kp_...); optional with --m2m")
@click.option("--org", "org_code", help="org_code claim (org_...)")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help=f"scope to include (repeatable): {', '.join(SCOPE_LEVELS)}",
)
@click.option("--m2m", is_flag=True, help="a machine (client-credentials) token")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(1, MAX_TTL),
              help="lifetime in seconds")
def token(sub: str | None, org_code: str | None, scopes: tuple[str, ...], m2m: bool,
          ttl: int) -> None:
    """Print an access token signed by the local key (local mode only).

    \b
    Examples:
      kinde-credits token --sub kp_alice
      kinde-credits token --m2m --scope credits:write
    Then: curl -H "Authorization: Bearer $(kinde-credits token --sub kp_alice)" \\
            http://127.0.0.1:8000/v1/wallets/kp_alice
    """
    from app.cli import _settings

    settings = _settings()
    if not settings.local_mode:
        raise click.ClickException(
            "KINDE_DOMAIN is set, so access tokens come from Kinde (e.g. an M2M app's "
            "client-credentials grant); `token` signs only with the local-mode key. Unset "
            "KINDE_DOMAIN to try the API locally."
        )
    if ttl > settings.token_max_lifetime_seconds:
        raise click.UsageError(
            f"--ttl may be at most {settings.token_max_lifetime_seconds} seconds "
            "(TOKEN_MAX_LIFETIME_SECONDS): the service refuses tokens that live longer"
        )
    if not m2m and not sub:
        raise click.UsageError("a user token needs --sub kp_... (or pass --m2m)")
    if sub is not None and not m2m and not sub.startswith("kp_"):
        raise click.UsageError("--sub must be a Kinde user id (kp_...) for a user token")
    if org_code is not None and not org_code.startswith("org_"):
        raise click.UsageError("--org must be a Kinde organization code (org_...)")

    from app.cli import _container

    # The container's keyring is the very key the server signs and verifies with (created
    # on first use), and its audience is the one the server's verifier demands.
    container = _container(pool_size=1)
    try:
        keyring = container.keyring
        if keyring is None:  # a custom key source was wired in; nothing to sign with
            raise click.ClickException("no local signing key is configured")
        click.echo(
            keyring.sign_access_token(
                sub=sub,
                org_code=org_code,
                scopes=list(scopes),
                audience=container.audience,
                issuer=settings.issuer,
                ttl_seconds=ttl,
                machine=m2m,
            )
        )
    finally:
        container.close()
