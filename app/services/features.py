"""Looking up what the product may report usage of."""

from __future__ import annotations

from app.domain.catalog import Feature
from app.services.errors import UnknownFeature
from app.services.wallet_writer import WalletWriter


def app_feature(writer: WalletWriter, key: str) -> Feature:
    """A feature the product may report usage of: `source = "app"` only."""
    catalog = writer.catalog
    feature = catalog.features.get(key)
    if feature is None:
        known = ", ".join(sorted(k for k, f in catalog.features.items() if f.source == "app"))
        raise UnknownFeature(f"unknown feature {key[:64]!r}; known features: {known}")
    if feature.source != "app":
        # Kinde meters it and its usage arrives as webhooks: debiting it here too would
        # charge the same usage twice.
        raise UnknownFeature(
            f"feature {key!r} is metered by Kinde; its usage arrives from Kinde and "
            f"cannot be reported here"
        )
    return feature
