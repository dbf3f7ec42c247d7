"""`GET /v1/catalog`: the features and credit packs, with value guidance in use terms.

Any authenticated caller may read it (no scope): it is the price list a signed-in front end
shows next to the balance ("Starter pack: 5,000 credits, about 2,500 file conversions").
"""

from __future__ import annotations

from typing import Any

from app.domain.catalog import Catalog
from app.domain.usage_terms import fmt, plural, units_left
from app.http import schemas
from app.http.api import container, make_blueprint, operation

bp = make_blueprint("catalog", "The credits catalog: features and packs")


def catalog_view(catalog: Catalog) -> dict[str, Any]:
    features = list(catalog.features.values())
    return {
        "features": [
            {
                "key": f.key,
                "label": f.label,
                "unit": f.unit,
                "credits_per_unit": f.credits_per_unit,
                "source": f.source,
            }
            for f in features
        ],
        "bundles": [
            {
                "key": b.key,
                "label": b.label or b.key,
                "credits": b.credits,
                # Money stays a decimal string: never a float on the wire.
                "price": str(b.price),
                "currency": b.currency,
                "description": b.description,
                "expires_after_days": b.expires_after_days,
                "value": [
                    {
                        "feature": f.key,
                        "units": (n := units_left(b.credits, f.credits_per_unit)),
                        "text": f"about {fmt(n)} {plural(f.unit, n)}",
                    }
                    for f in features
                ],
            }
            for b in catalog.bundles.values()
        ],
    }


@operation(bp, "/v1/catalog", "GET",
           response=(200, schemas.CatalogSchema), errors=(401, 503))
def get_catalog() -> dict[str, Any]:
    """Features (what each use costs) and bundles (packs for sale, with what they buy)."""
    return catalog_view(container().catalog)
