"""The Feast feature repository: entities, sources, views per entity, services per model.

Only declarations live here; the code that computes feature tables is `features.build`.
"""

from features.repo import customer_views, entities, offer_views, services, shipment_views, sources

MODULES = (entities, sources, customer_views, shipment_views, offer_views, services)


def feast_objects() -> list:
    """Every Feast object declared in the repository, for `FeatureStore.apply`."""
    from feast import Entity, FeatureService, FeatureView, FileSource

    kinds = (Entity, FileSource, FeatureView, FeatureService)
    found = {}
    for module in MODULES:
        for value in vars(module).values():
            if isinstance(value, kinds):
                found[(type(value).__name__, value.name)] = value
    return list(found.values())


def feature_views() -> list:
    """The feature views, by name."""
    from feast import FeatureView

    return [o for o in feast_objects() if isinstance(o, FeatureView)]


def join_keys(view) -> list[str]:
    """Join keys of a view, resolved from its entities (Feast fills them only on apply)."""
    from feast import Entity

    by_name = {o.name: o for o in feast_objects() if isinstance(o, Entity)}
    return [by_name[entity].join_key for entity in view.entities]
