"""One function for the ETag of any resource a change may be made conditional on.

``etag(resource)`` gives the tag the REST API sends in its ``ETag`` header for a model version,
an alias, a model card or an approval policy — computed from the object itself, so the SDK gives
the same tag embedded and remote. Pass it back as ``if_match=`` (``If-Match`` over REST) to
refuse the change when someone else changed the resource since you read it (412).
"""

from __future__ import annotations

from civicml.oversight.card_fields import ModelCard
from civicml.oversight.cards import card_etag
from civicml.registry.etags import alias_etag, policy_etag, version_etag
from civicml.registry.schemas import ApprovalPolicyRecord, ModelAlias, ModelVersion

__all__ = ["etag"]


def etag(resource: ModelVersion | ModelAlias | ModelCard | ApprovalPolicyRecord) -> str:
    """The ETag of a model version, alias, model card or approval policy as read.

    Example:
        >>> alias = proj.models.alias("eligibility", "production")  # doctest: +SKIP
        >>> proj.models.set_alias("eligibility", "production", 3,
        ...                       if_match=etag(alias))  # doctest: +SKIP

    Raises:
        TypeError: Not one of those resources.
    """
    if isinstance(resource, ModelAlias):
        return alias_etag(resource.version_id, resource.alias)
    if isinstance(resource, ModelVersion):
        return version_etag(resource)
    if isinstance(resource, ModelCard):
        return card_etag(resource)
    if isinstance(resource, ApprovalPolicyRecord):
        return policy_etag(resource)
    raise TypeError(
        f"etag() takes a ModelVersion, ModelAlias, ModelCard or ApprovalPolicyRecord, "
        f"not {type(resource).__name__}."
    )
